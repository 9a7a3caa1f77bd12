//! The agent's one Session stream to the controller leader.
//!
//! Reports are numbered per agent process (incarnation) from 1 and kept in
//! a bounded buffer until acknowledged; on overflow the oldest is dropped
//! and counted. After Welcome the agent resends, in order, every buffered
//! report after `last_acked_seq`. A report goes out every interval, and at
//! once when a check changes state. Without a controller the agent tries the
//! next configured address, or the leader a follower named, with
//! exponential backoff and jitter; reports keep being taken meanwhile, also
//! while a connection is being set up. A controller that does not answer
//! gets a fresh attempt every second while the others are asked who leads
//! (`open_racing`), so a healed link is used within about a second.
//!
//! ExecuteAction requests go to the executor in their own tasks; results
//! that cannot be sent at once wait (bounded) for the next session, and the
//! executor's stored results answer a controller that asks again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leitstand_proto::domain::bounds;
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, agent_message, controller_message};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::collect::HostCollector;
use crate::config::AgentConfig;
use crate::executor::Executor;
use leitstand_proto::error_chain;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Small enough that agents are back within seconds once a partition heals
/// (drill `agents-cut-from-leader`); with jitter, 10 000 agents retrying a
/// lost cluster make about 4 000 connection attempts a second.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
/// Attempts at one controller in flight at once; while it does not answer,
/// a fresh one starts every `connect_timeout / MAX_OPEN_ATTEMPTS` (see
/// [`open_racing`]).
const MAX_OPEN_ATTEMPTS: u32 = 3;
/// How long a controller whose session just failed is passed over: not the
/// next one tried in turn, and a leader hint naming it (a follower's stale
/// view) is not followed.
const FAILED_MEMORY: Duration = Duration::from_secs(1);
/// How long a controller that knew no leader even after waiting for an
/// election is passed over: it may be cut off from the others (an old
/// leader that hears nobody), and asking it again costs that wait.
const LEADERLESS_MEMORY: Duration = Duration::from_secs(3);
/// The longest pause before asking the next controller when a hint named
/// the one that just failed: a new leader is usually elected within a
/// second, and the agent must find it (or the old one, healed) quickly.
const AVOIDED_HINT_DELAY_MAX: Duration = Duration::from_millis(500);
/// Answers "no leader known" in a row after which the agent waits its full
/// backoff: the first ones come during an election, later ones from a
/// cluster without a quorum, which thousands of agents must not hammer.
const MAX_QUICK_LEADERLESS: u32 = 2;
/// Sessions replaced by a newer one of this agent (see
/// [`SessionEnd::Replaced`]) that are answered at once, in a row; then the
/// agent backs off, since two processes with one identity would otherwise
/// replace each other as fast as the network allows.
const MAX_REPLACED_IN_A_ROW: u32 = 3;
/// Leader hints followed in a row before the agent suspects stale hints
/// (followers naming each other) and falls back to backoff.
const MAX_HINTS_IN_A_ROW: u32 = 3;
/// Actions running or queued at once; more requests are refused as busy.
const MAX_ACTIONS_IN_FLIGHT: usize = 16;
/// Action results kept for a controller that is not reachable right now.
const MAX_PENDING_ACTION_RESULTS: usize = 256;
/// A report the controller has not acknowledged this long after it went
/// out means the session is dead even if TCP has not noticed (a link that
/// drops everything, a frozen controller): the agent moves on to another
/// controller. Twice the report interval, within these bounds.
const ACK_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(10);

fn ack_timeout(report_interval: Duration) -> Duration {
    (report_interval * 2).clamp(ACK_TIMEOUT_MIN, ACK_TIMEOUT_MAX)
}

/// Encoded bytes of unacknowledged reports kept at most, whatever their
/// number: the buffer's memory bound (docs/ARCHITECTURE.md).
pub(crate) const MAX_BUFFER_BYTES: usize = 4 << 20;

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
        let span =
            u64::try_from(ceiling.saturating_sub(BACKOFF_MIN).as_millis()).unwrap_or(u64::MAX);
        BACKOFF_MIN + Duration::from_millis(fastrand::u64(0..=span))
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Changes the agent makes to a running reporter.
#[derive(Debug)]
pub(crate) enum Control {
    /// A reloaded configuration: new allowlist and check names.
    Reload {
        executor: Arc<Executor>,
        checks: Vec<String>,
    },
}

/// Where the reporter's events come from.
pub(crate) struct Inputs {
    pub(crate) check_results: mpsc::Receiver<v1::CheckResult>,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) stop: watch::Receiver<bool>,
    /// The latest report, for the agent's own /metrics.
    pub(crate) publish: watch::Sender<Option<Arc<v1::Report>>>,
}

enum Event {
    Tick,
    Check(v1::CheckResult),
    ActionDone(v1::ActionResult),
    Control(Control),
    Stop,
}

enum SessionEnd {
    Stopped,
    /// A follower answered; go to the leader it named, if any.
    NotLeader {
        hint: Option<String>,
    },
    Failed(String),
    /// The controller ended this session because a newer one of this
    /// agent registered (ABORTED): usually an attempt of our own racing
    /// that the controller saw complete after the one we kept.
    Replaced,
}

pub(crate) struct Reporter {
    config: AgentConfig,
    tls: Arc<ClientTls>,
    collector: HostCollector,
    executor: Arc<Executor>,
    check_names: Vec<String>,
    inputs: Inputs,
    tick: Interval,
    incarnation: u64,
    next_seq: u64,
    buffer: VecDeque<v1::Report>,
    /// Encoded size of `buffer`.
    buffer_bytes: usize,
    /// When the controller last acknowledged a report.
    last_ack: Option<Instant>,
    dropped: u64,
    /// The latest result of every check, sent with each report.
    latest: BTreeMap<String, v1::CheckResult>,
    actions_in_flight: Arc<Semaphore>,
    action_done_tx: mpsc::Sender<v1::ActionResult>,
    action_done: mpsc::Receiver<v1::ActionResult>,
    pending_results: VecDeque<v1::ActionResult>,
}

impl Reporter {
    pub(crate) fn new(
        config: AgentConfig,
        tls: Arc<ClientTls>,
        collector: HostCollector,
        executor: Arc<Executor>,
        check_names: Vec<String>,
        inputs: Inputs,
    ) -> Self {
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (action_done_tx, action_done) = mpsc::channel(MAX_ACTIONS_IN_FLIGHT);
        Reporter {
            config,
            tls,
            collector,
            executor,
            check_names,
            inputs,
            tick,
            incarnation: u64::try_from(unix_ms()).unwrap_or(1).max(1),
            next_seq: 1,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            last_ack: None,
            dropped: 0,
            latest: BTreeMap::new(),
            actions_in_flight: Arc::new(Semaphore::new(MAX_ACTIONS_IN_FLIGHT)),
            action_done_tx,
            action_done,
            pending_results: VecDeque::new(),
        }
    }

    async fn next_event(&mut self) -> Event {
        tokio::select! {
            _ = self.tick.tick() => Event::Tick,
            Some(result) = self.inputs.check_results.recv() => Event::Check(result),
            Some(result) = self.action_done.recv() => Event::ActionDone(result),
            Some(control) = self.inputs.control.recv() => Event::Control(control),
            () = stopped(&mut self.inputs.stop) => Event::Stop,
        }
    }

    /// Handles an event the same way online and offline; returns what to
    /// send if a stream is open, `None` on stop.
    fn handle(&mut self, event: Event) -> Option<Vec<v1::AgentMessage>> {
        let mut out = Vec::new();
        match event {
            Event::Stop => return None,
            Event::Tick => out.push(report_message(self.take_report(true))),
            Event::Check(result) => {
                let changed = self
                    .latest
                    .get(&result.name)
                    .map(|previous| previous.status)
                    != Some(result.status);
                // A state change goes out at once, not at the next tick; so
                // does every critical result, because a controller counts
                // consecutive critical results to fail a path (fail_after),
                // and waiting for the tick would add up to one interval to
                // each failover. Bounded by the check intervals (≥ 100 ms).
                let urgent = changed || result.status == v1::CheckStatus::Critical as i32;
                if self.check_names.contains(&result.name) {
                    self.latest.insert(result.name.clone(), result);
                    if urgent {
                        out.push(report_message(self.take_report(false)));
                    }
                }
            }
            Event::ActionDone(result) => {
                if self.pending_results.len() >= MAX_PENDING_ACTION_RESULTS {
                    // The executor keeps every result on disk; a controller
                    // that asks again gets it from there.
                    self.pending_results.pop_front();
                }
                self.pending_results.push_back(result);
            }
            Event::Control(Control::Reload { executor, checks }) => {
                self.executor = executor;
                self.latest.retain(|name, _| checks.contains(name));
                self.check_names = checks;
                out.push(v1::AgentMessage {
                    kind: Some(agent_message::Kind::Announce(v1::Announce {
                        checks: self.check_names.clone(),
                        actions: self.executor.action_names(),
                    })),
                });
            }
        }
        while let Some(result) = self.pending_results.pop_front() {
            out.push(v1::AgentMessage {
                kind: Some(agent_message::Kind::ActionResult(result)),
            });
        }
        Some(out)
    }

    /// Takes a report and keeps it until acknowledged.
    fn take_report(&mut self, with_host_metrics: bool) -> v1::Report {
        let report = v1::Report {
            seq: self.next_seq,
            observed_at_unix_ms: unix_ms(),
            host: with_host_metrics.then(|| self.collector.collect()),
            checks: self.latest.values().cloned().collect(),
        };
        self.next_seq += 1;
        if report.host.is_some() {
            self.inputs
                .publish
                .send_replace(Some(Arc::new(report.clone())));
        }
        let size = report.encoded_len();
        while !self.buffer.is_empty()
            && (self.buffer.len() >= self.config.buffer_reports
                || self.buffer_bytes + size > MAX_BUFFER_BYTES)
        {
            self.pop_oldest();
            self.dropped += 1;
            tracing::warn!(
                dropped_total = self.dropped,
                capacity = self.config.buffer_reports,
                buffered_bytes = self.buffer_bytes,
                "report buffer full; dropped the oldest unacknowledged report"
            );
        }
        self.buffer_bytes += size;
        self.buffer.push_back(report.clone());
        report
    }

    fn pop_oldest(&mut self) {
        if let Some(oldest) = self.buffer.pop_front() {
            self.buffer_bytes = self.buffer_bytes.saturating_sub(oldest.encoded_len());
        }
    }

    fn hello(&self) -> v1::AgentMessage {
        v1::AgentMessage {
            kind: Some(agent_message::Kind::Hello(v1::Hello {
                agent_id: self.config.id.to_string(),
                version: leitstand_proto::VERSION.to_owned(),
                checks: self.check_names.clone(),
                actions: self.executor.action_names(),
                report_interval_ms: u32::try_from(self.config.interval.as_millis())
                    .unwrap_or(u32::MAX),
                incarnation: self.incarnation,
            })),
        }
    }

    /// Starts an action in its own task; its result arrives as an event.
    fn dispatch(&self, request: v1::ExecuteAction) -> Option<v1::AgentMessage> {
        let Ok(permit) = self.actions_in_flight.clone().try_acquire_owned() else {
            tracing::warn!(decision_id = %request.decision_id, "too many actions in flight; refusing");
            return Some(v1::AgentMessage {
                kind: Some(agent_message::Kind::ActionResult(v1::ActionResult {
                    outcome: v1::ActionOutcome::Refused as i32,
                    reason: format!(
                        "{MAX_ACTIONS_IN_FLIGHT} actions are already in flight on this agent"
                    ),
                    decision_id: request.decision_id,
                    service: request.service,
                    action: request.action,
                    fencing_token: request.fencing_token,
                    ..Default::default()
                })),
            });
        };
        let executor = self.executor.clone();
        let done = self.action_done_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = executor.execute(request).await;
            let _ = done.send(result).await;
        });
        None
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff { attempt: 0 };
        let mut next_controller = 0usize;
        let mut leader_hint: Option<String> = None;
        let mut hints_in_a_row = 0u32;
        let mut replaced_in_a_row = 0u32;
        let mut leaderless_in_a_row = 0u32;
        // The controller whose session failed last (or that knew no leader),
        // and when: passed over for `failed_memory` (a dead leader's address
        // would otherwise come round again at once, or through a follower's
        // stale hint, and cost a connect timeout each time).
        let mut failed: Option<(String, Instant)> = None;
        // How long `failed` is passed over.
        let mut failed_memory = FAILED_MEMORY;
        loop {
            let avoid = failed
                .as_ref()
                .filter(|(_, at)| at.elapsed() < failed_memory)
                .map(|(address, _)| address.clone());
            let address = leader_hint.take().unwrap_or_else(|| {
                let controllers = &self.config.controllers;
                let mut a = controllers[next_controller % controllers.len()].clone();
                next_controller = next_controller.wrapping_add(1);
                if controllers.len() > 1 && avoid.as_ref() == Some(&a) {
                    a = controllers[next_controller % controllers.len()].clone();
                    next_controller = next_controller.wrapping_add(1);
                }
                a
            });
            let started = Instant::now();
            let (end, address) = self.session(&address).await;
            // A controller that knows no leader even after waiting for the
            // election (it may be cut off from the others) is passed over
            // like a failed one, and longer: the answer is elsewhere.
            match end {
                SessionEnd::Failed(_) => {
                    failed = Some((address.clone(), Instant::now()));
                    failed_memory = FAILED_MEMORY;
                }
                SessionEnd::NotLeader { hint: None } => {
                    failed = Some((address.clone(), Instant::now()));
                    failed_memory = LEADERLESS_MEMORY;
                }
                _ => {}
            }
            if started.elapsed() >= HEALTHY_SESSION {
                backoff.reset();
                replaced_in_a_row = 0;
            }
            if !matches!(end, SessionEnd::NotLeader { hint: None }) {
                leaderless_in_a_row = 0;
            }
            let delay = match end {
                SessionEnd::Stopped => return,
                SessionEnd::Replaced if replaced_in_a_row < MAX_REPLACED_IN_A_ROW => {
                    // The controller is fine and a session of ours is its
                    // newest; open one more and let that be the one.
                    replaced_in_a_row += 1;
                    tracing::info!(controller = %address, "a newer session of this agent replaced this one; opening another");
                    leader_hint = Some(address);
                    continue;
                }
                SessionEnd::Replaced => {
                    replaced_in_a_row = 0;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        controller = %address,
                        "sessions replaced {MAX_REPLACED_IN_A_ROW} times in a row: is another agent running with this certificate? retrying in {delay:?}"
                    );
                    delay
                }
                SessionEnd::NotLeader { hint: Some(hint) }
                    if hints_in_a_row < MAX_HINTS_IN_A_ROW && avoid.as_ref() != Some(&hint) =>
                {
                    hints_in_a_row += 1;
                    tracing::info!(controller = %address, leader = %hint, "following the leader hint");
                    leader_hint = Some(hint);
                    continue;
                }
                SessionEnd::NotLeader { hint: Some(hint) } if avoid.as_ref() == Some(&hint) => {
                    hints_in_a_row = 0;
                    let delay = backoff.next_delay().min(AVOIDED_HINT_DELAY_MAX);
                    tracing::info!(controller = %address, leader = %hint, "the hint names the controller that just failed (the follower has not noticed yet); trying the next in {delay:?}");
                    delay
                }
                SessionEnd::NotLeader { hint: Some(hint) } => {
                    // Followers naming each other: their hints are stale.
                    hints_in_a_row = 0;
                    let delay = backoff.next_delay();
                    tracing::info!(controller = %address, leader = %hint, "{MAX_HINTS_IN_A_ROW} leader hints in a row led nowhere; trying the next in {delay:?}");
                    delay
                }
                SessionEnd::NotLeader { hint: None } => {
                    hints_in_a_row = 0;
                    leaderless_in_a_row += 1;
                    // The controller already waited for an election; the
                    // next one (this one is passed over) may know more. Only
                    // a cluster that stays leaderless gets the full backoff.
                    let delay = if leaderless_in_a_row <= MAX_QUICK_LEADERLESS {
                        backoff.next_delay().min(AVOIDED_HINT_DELAY_MAX)
                    } else {
                        backoff.next_delay()
                    };
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
            if self
                .offline_until(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Awaits `work` while handling events without a stream; `None` on stop.
    async fn offline_until<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                event = self.next_event() => {
                    // Nothing can be sent: reports stay buffered, results pending.
                    let unsent = self.handle(event)?;
                    for message in unsent {
                        if let Some(agent_message::Kind::ActionResult(result)) = message.kind {
                            self.pending_results.push_back(result);
                        }
                    }
                }
            }
        }
    }

    /// One session: opened by [`open_racing`], then reports out and
    /// Acks, actions and NotLeader in, until it ends. Returns how it ended
    /// and the controller it ended with (a consulted controller may turn out
    /// to be the leader and take the session).
    async fn session(&mut self, target: &str) -> (SessionEnd, String) {
        let others: Vec<String> = self
            .config
            .controllers
            .iter()
            .filter(|c| c.as_str() != target)
            .cloned()
            .collect();
        let racing = open_racing(
            self.tls.clone(),
            target.to_owned(),
            others,
            self.hello(),
            self.config.connect_timeout,
        );
        let (address, session) = match self.offline_until(racing).await {
            None => return (SessionEnd::Stopped, target.to_owned()),
            Some(Opening::Failed(why)) => return (SessionEnd::Failed(why), target.to_owned()),
            Some(Opening::NotLeader { hint }) => {
                return (SessionEnd::NotLeader { hint }, target.to_owned());
            }
            Some(Opening::Opened { address, session }) => (address, session),
        };
        let OpenSession {
            outbound,
            mut inbound,
            welcome,
        } = *session;
        let end = self.serve(&address, outbound, &mut inbound, welcome).await;
        (end, address)
    }

    async fn serve(
        &mut self,
        address: &str,
        outbound: mpsc::Sender<v1::AgentMessage>,
        inbound: &mut tonic::Streaming<v1::ControllerMessage>,
        welcome: v1::Welcome,
    ) -> SessionEnd {
        while self
            .buffer
            .front()
            .is_some_and(|r| r.seq <= welcome.last_acked_seq)
        {
            self.pop_oldest();
        }
        tracing::info!(
            controller = %address,
            node_id = welcome.node_id,
            controller_version = %welcome.controller_version,
            resending = self.buffer.len(),
            "connected to controller"
        );
        // What goes out, in order: the replay, pending action results, then
        // whatever events produce. The controller is read while this is sent,
        // so neither side can stall the other once HTTP/2 windows are full.
        let mut queue: VecDeque<v1::AgentMessage> =
            self.buffer.iter().cloned().map(report_message).collect();
        queue.extend(
            self.pending_results
                .drain(..)
                .map(|result| v1::AgentMessage {
                    kind: Some(agent_message::Kind::ActionResult(result)),
                }),
        );
        let mut first_ack_logged = false;
        let ack_timeout = ack_timeout(self.config.interval);
        // Since when a report sent on this session waits for its Ack.
        let mut awaiting_ack: Option<Instant> = None;
        let end = loop {
            let ack_deadline = awaiting_ack.map(|since| since + ack_timeout);
            let no_ack = async {
                match ack_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            if let Some(message) = queue.pop_front() {
                tokio::select! {
                    permit = outbound.reserve() => match permit {
                        Ok(permit) => {
                            if matches!(message.kind, Some(agent_message::Kind::Report(_))) {
                                awaiting_ack.get_or_insert_with(Instant::now);
                            }
                            permit.send(message);
                        }
                        Err(_) => {
                            queue.push_front(message);
                            break SessionEnd::Failed("outbound stream closed".into());
                        }
                    },
                    next = inbound.message() => {
                        queue.push_front(message);
                        match self.on_inbound(next, address, &mut first_ack_logged) {
                            Ok(more) => queue.extend(more),
                            Err(end) => break end,
                        }
                        awaiting_ack = self.still_awaiting(awaiting_ack);
                    }
                    () = no_ack => break no_ack_end(ack_timeout),
                }
                continue;
            }
            tokio::select! {
                event = self.next_event() => match self.handle(event) {
                    Some(messages) => queue.extend(messages),
                    None => break SessionEnd::Stopped,
                },
                next = inbound.message() => {
                    match self.on_inbound(next, address, &mut first_ack_logged) {
                        Ok(more) => queue.extend(more),
                        Err(end) => break end,
                    }
                    awaiting_ack = self.still_awaiting(awaiting_ack);
                }
                () = no_ack => break no_ack_end(ack_timeout),
            }
        };
        // Reports stay in the buffer anyway; unsent action results wait for
        // the next session.
        for message in queue {
            if let Some(agent_message::Kind::ActionResult(result)) = message.kind {
                self.pending_results.push_back(result);
            }
        }
        end
    }

    /// After a message from the controller: an Ack that emptied the buffer
    /// ends the wait; one that left reports waiting restarts it (the
    /// controller is alive and working through them).
    fn still_awaiting(&self, awaiting: Option<Instant>) -> Option<Instant> {
        match awaiting {
            Some(_) if self.buffer.is_empty() => None,
            Some(since) if self.last_ack.is_some_and(|at| at >= since) => Some(Instant::now()),
            other => other,
        }
    }

    /// Handles one message from the controller; returns what to send in
    /// answer, or how the session ends.
    fn on_inbound(
        &mut self,
        next: Result<Option<v1::ControllerMessage>, tonic::Status>,
        address: &str,
        first_ack_logged: &mut bool,
    ) -> Result<Vec<v1::AgentMessage>, SessionEnd> {
        match next {
            Ok(Some(v1::ControllerMessage { kind: Some(kind) })) => match kind {
                controller_message::Kind::Ack(ack) => {
                    self.last_ack = Some(Instant::now());
                    while self.buffer.front().is_some_and(|r| r.seq <= ack.seq) {
                        self.pop_oldest();
                    }
                    if !*first_ack_logged {
                        *first_ack_logged = true;
                        tracing::info!(controller = %address, seq = ack.seq, "reports acknowledged");
                    }
                    Ok(Vec::new())
                }
                controller_message::Kind::ExecuteAction(request) => {
                    Ok(self.dispatch(request).into_iter().collect())
                }
                controller_message::Kind::NotLeader(not_leader) => {
                    let hint = Some(not_leader.leader_hint).filter(|h| !h.is_empty());
                    Err(SessionEnd::NotLeader { hint })
                }
                controller_message::Kind::Welcome(_) => {
                    Err(SessionEnd::Failed("a second Welcome on one session".into()))
                }
            },
            Ok(Some(v1::ControllerMessage { kind: None })) => Err(SessionEnd::Failed(
                "an empty message from the controller".into(),
            )),
            Ok(None) => Err(SessionEnd::Failed(
                "the controller closed the stream".into(),
            )),
            Err(status) if status.code() == tonic::Code::Aborted => Err(SessionEnd::Replaced),
            Err(status) => Err(SessionEnd::Failed(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            ))),
        }
    }
}

/// How opening a session ended.
enum Opening {
    Opened {
        address: String,
        session: Box<OpenSession>,
    },
    /// The controller, or a consulted one, named another leader or none.
    NotLeader {
        hint: Option<String>,
    },
    Failed(String),
}

/// A session the controller welcomed.
struct OpenSession {
    outbound: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::ControllerMessage>,
    welcome: v1::Welcome,
}

/// What one attempt's first answer was.
enum Answer {
    Welcome(Box<OpenSession>),
    NotLeader { hint: Option<String> },
}

enum AttemptError {
    /// No answer within `connect_timeout`: the controller or the link to it
    /// may be gone, or only slow.
    TimedOut,
    /// A definite answer: refused, reset, a TLS or gRPC error.
    Failed(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The controller the agent believes leads.
    Target,
    /// Another controller, asked who leads while the target does not answer.
    Consulted,
}

/// Opens a session with `target` and waits for its first message.
async fn open_once(
    tls: Arc<ClientTls>,
    address: String,
    hello: v1::AgentMessage,
    timeout: Duration,
) -> Result<Answer, AttemptError> {
    let (outbound, outbound_rx) = mpsc::channel::<v1::AgentMessage>(64);
    // Cannot fail: the receiver is right here.
    let _ = outbound.try_send(hello);
    let opening = async {
        let channel = tls.channel(&address).await.map_err(|e| error_chain(&e))?;
        let mut client = AgentGatewayClient::new(channel)
            .max_decoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES)
            .max_encoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES);
        let mut inbound = client
            .session(ReceiverStream::new(outbound_rx))
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        let first = inbound
            .message()
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok::<_, String>((inbound, first))
    };
    let (inbound, first) = match tokio::time::timeout(timeout, opening).await {
        Err(_) => return Err(AttemptError::TimedOut),
        Ok(Err(why)) => return Err(AttemptError::Failed(why)),
        Ok(Ok(opened)) => opened,
    };
    match first.and_then(|m| m.kind) {
        None => Err(AttemptError::Failed(
            "the controller closed the stream before Welcome".into(),
        )),
        Some(controller_message::Kind::Welcome(welcome)) => {
            Ok(Answer::Welcome(Box::new(OpenSession {
                outbound,
                inbound,
                welcome,
            })))
        }
        Some(controller_message::Kind::NotLeader(not_leader)) => Ok(Answer::NotLeader {
            hint: Some(not_leader.leader_hint).filter(|h| !h.is_empty() && *h != address),
        }),
        Some(_) => Err(AttemptError::Failed(
            "the controller's first message was not Welcome".into(),
        )),
    }
}

/// Opens a session with `target`, racing fresh attempts against a slow one.
///
/// An attempt through a link that drops everything hangs until its timeout,
/// and a link that heals meanwhile does not revive it (the bytes it sent are
/// gone). So while the target has not answered, another attempt starts every
/// `timeout / MAX_OPEN_ATTEMPTS` (each lasting at most `timeout`, so at most
/// [`MAX_OPEN_ATTEMPTS`] at once): once the link heals, the agent is back
/// within about that long rather than a whole timeout later (drill
/// `agents-cut-from-leader`, DESIGN.md I7).
///
/// Whether waiting for the target is still right, the other controllers
/// know: every `timeout`, starting when the first attempt times out, one of
/// them is asked in turn. If it names the target as leader, the racing goes
/// on; if it names another leader or none, or leads itself, or does not
/// answer either, that ends the opening and the caller goes on as it would
/// after any session. Without other controllers the opening fails when the
/// attempts started within `timeout` have timed out.
async fn open_racing(
    tls: Arc<ClientTls>,
    target: String,
    others: Vec<String>,
    hello: v1::AgentMessage,
    timeout: Duration,
) -> Opening {
    let retry_every = timeout / MAX_OPEN_ATTEMPTS;
    let started = Instant::now();
    let mut attempts = tokio::task::JoinSet::new();
    let start = |attempts: &mut tokio::task::JoinSet<_>, role: Role, address: String| {
        let (tls, hello) = (tls.clone(), hello.clone());
        attempts.spawn(async move {
            let answer = open_once(tls, address.clone(), hello, timeout).await;
            (role, address, answer)
        });
    };
    start(&mut attempts, Role::Target, target.clone());
    let mut target_in_flight = 1u32;
    let mut next_retry = started + retry_every;
    let mut next_consult = started + timeout;
    let mut consulted = 0usize;
    let mut consulting = false;
    loop {
        let may_retry = target_in_flight < MAX_OPEN_ATTEMPTS
            && (!others.is_empty() || next_retry < started + timeout);
        let may_consult = !consulting && !others.is_empty();
        tokio::select! {
            joined = attempts.join_next() => {
                let Some(joined) = joined else {
                    return Opening::Failed(format!(
                        "no answer within {timeout:?} (connect, TLS handshake, Session call)"
                    ));
                };
                let (role, address, answer) = match joined {
                    Ok(done) => done,
                    // A panicked attempt is a bug, but not the agent's end.
                    Err(e) => return Opening::Failed(format!("an opening attempt failed: {e}")),
                };
                match (role, answer) {
                    (_, Ok(Answer::Welcome(session))) => {
                        return Opening::Opened { address, session };
                    }
                    (Role::Target, Ok(Answer::NotLeader { hint })) => {
                        return Opening::NotLeader { hint };
                    }
                    (Role::Target, Err(AttemptError::Failed(why))) => return Opening::Failed(why),
                    (Role::Target, Err(AttemptError::TimedOut)) => target_in_flight -= 1,
                    (Role::Consulted, Ok(Answer::NotLeader { hint: Some(hint) })) if hint == target => {
                        consulting = false;
                        tracing::debug!(controller = %target, consulted = %address, "still the leader; trying it again");
                    }
                    (Role::Consulted, Ok(Answer::NotLeader { hint })) => {
                        tracing::info!(controller = %target, consulted = %address, leader = ?hint, "no answer from the controller, and another one names a different leader");
                        return Opening::NotLeader { hint };
                    }
                    (Role::Consulted, Err(e)) => {
                        let why = match e {
                            AttemptError::TimedOut => format!("no answer within {timeout:?}"),
                            AttemptError::Failed(why) => why,
                        };
                        return Opening::Failed(format!(
                            "no answer within {timeout:?}, and {address}, asked who leads, failed too: {why}"
                        ));
                    }
                }
            }
            () = tokio::time::sleep_until(next_retry), if may_retry => {
                start(&mut attempts, Role::Target, target.clone());
                target_in_flight += 1;
                next_retry += retry_every;
            }
            () = tokio::time::sleep_until(next_consult), if may_consult => {
                start(&mut attempts, Role::Consulted, others[consulted % others.len()].clone());
                consulted += 1;
                consulting = true;
                next_consult += timeout;
            }
        }
    }
}

fn no_ack_end(waited: Duration) -> SessionEnd {
    SessionEnd::Failed(format!(
        "no acknowledgement within {waited:?}: the controller or the link to it is gone"
    ))
}

fn report_message(report: v1::Report) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(report)),
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short, so the tests take seconds; long enough for a loopback handshake
    /// on a busy machine.
    const TIMEOUT: Duration = Duration::from_millis(1500);

    /// An agent certificate and the CA, in a fresh directory.
    fn agent_tls(dir: &std::path::Path) -> Arc<ClientTls> {
        use leitstand_proto::identity::PeerKind;
        use leitstand_proto::pki;
        pki::init(dir, "city.example", false).expect("pki init");
        let request = pki::IssueRequest {
            kind: PeerKind::Agent,
            name: "site-1".to_owned(),
            dns: Vec::new(),
            ips: Vec::new(),
            validity: pki::Validity::days_from_now(1),
            force: false,
        };
        pki::issue(dir, &request).expect("pki issue");
        let files = leitstand_proto::pki::peer_files(dir, PeerKind::Agent, "site-1");
        Arc::new(ClientTls::load(files).expect("client TLS"))
    }

    /// A controller behind a link that drops everything: it accepts and
    /// reads, never answers; counts the connections.
    async fn black_hole() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn a_silent_controller_gets_fresh_attempts_until_another_one_is_asked_who_leads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = agent_tls(dir.path());
        let (target, accepted) = black_hole().await;
        // A port nobody listens on: the controller asked who leads is down.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let down = closed.local_addr().expect("address").to_string();
        drop(closed);
        let hello = v1::AgentMessage::default();
        let opening = open_racing(tls, target.clone(), vec![down.clone()], hello, TIMEOUT);
        let outcome = tokio::time::timeout(TIMEOUT * 3, opening)
            .await
            .expect("the opening ends once the consulted controller fails");
        let Opening::Failed(why) = outcome else {
            panic!("expected a failed opening");
        };
        assert!(
            why.contains(&down) && why.contains("asked who leads"),
            "the reason names the consulted controller: {why}"
        );
        // Attempts at 0, ⅓ and ⅔ of the timeout; the consultation at the
        // timeout ends it.
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            MAX_OPEN_ATTEMPTS as usize,
            "a fresh attempt every {:?} while the first hangs",
            TIMEOUT / MAX_OPEN_ATTEMPTS
        );
    }

    #[tokio::test]
    async fn without_other_controllers_the_opening_fails_when_its_attempts_time_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = agent_tls(dir.path());
        let (target, accepted) = black_hole().await;
        let started = Instant::now();
        let outcome = open_racing(
            tls,
            target,
            Vec::new(),
            v1::AgentMessage::default(),
            TIMEOUT,
        )
        .await;
        assert!(
            matches!(outcome, Opening::Failed(_)),
            "a silent controller fails the opening"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            MAX_OPEN_ATTEMPTS as usize
        );
        let took = started.elapsed();
        assert!(
            took < TIMEOUT * 2,
            "bounded by the last attempt's timeout: {took:?}"
        );
    }

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
