//! Everything that can happen to the dashboard, as one closed enum, and
//! the sources that produce it. Each source runs on its own (a thread for
//! the terminal, tasks for the network and the clock) and sends into one
//! channel; the main loop only ever waits on that channel (gitui's shape).

use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{self as term, KeyEvent, MouseEvent};
use tokio::sync::mpsc;

use crate::client::{OperatorClient, WatchUpdate};
use crate::cluster::ClusterStatus;
use crate::view::{ActionReply, AuditEntry};

/// How often the clock ticks (ages on screen move on).
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How often the cluster view asks for ClusterStatus.
pub(crate) const CLUSTER_POLL: Duration = Duration::from_secs(2);
/// How long the terminal thread waits for input before it checks
/// whether the dashboard is still there.
const INPUT_POLL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    Tick,
    Net(NetEvent),
}

/// What came back from the controllers.
#[derive(Debug)]
pub enum NetEvent {
    Watch(WatchUpdate),
    Cluster(Result<ClusterStatus, String>),
    Audit(Result<Vec<AuditEntry>, String>),
    /// An operator action (approve, reject) finished.
    Action {
        action: Action,
        result: Result<ActionReply, String>,
    },
}

/// An operator action the dashboard can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Approve { decision_id: String },
    Reject { decision_id: String, reason: String },
}

impl Action {
    pub(crate) fn decision_id(&self) -> &str {
        match self {
            Action::Approve { decision_id } | Action::Reject { decision_id, .. } => decision_id,
        }
    }
}

/// What the keys of `leitstand dev`'s sandbox ask of it (only when the
/// dashboard was started with [`run_sandbox`](super::run_sandbox)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxRequest {
    BreakPrimary,
    RepairPrimary,
}

/// Network work the app asks the main loop to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Send(Action),
    /// Audit entries from this index on.
    LoadAudit {
        from: u64,
    },
    /// Handed to the sandbox by the main loop; no network.
    Sandbox(SandboxRequest),
}

/// Reads the terminal on a thread of its own (crossterm's reads block)
/// until the receiver is gone.
pub(crate) fn spawn_input(tx: mpsc::Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("dashboard-input".to_owned())
        .spawn(move || {
            while !tx.is_closed() {
                match term::poll(INPUT_POLL) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => return,
                }
                let event = match term::read() {
                    Ok(term::Event::Key(key)) if key.kind != term::KeyEventKind::Release => {
                        Event::Key(key)
                    }
                    Ok(term::Event::Mouse(mouse)) => Event::Mouse(mouse),
                    Ok(term::Event::Resize(w, h)) => Event::Resize(w, h),
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.blocking_send(event).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}

/// The clock, the Watch stream and the periodic ClusterStatus.
pub(crate) fn spawn_background(client: &Arc<OperatorClient>, tx: &mpsc::Sender<Event>) {
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if ticks.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });

    let mut updates = client.watch(64);
    let watch = tx.clone();
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            if watch
                .send(Event::Net(NetEvent::Watch(update)))
                .await
                .is_err()
            {
                return;
            }
        }
    });

    let polled = tx.clone();
    let client = Arc::clone(client);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(CLUSTER_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let result = client
                .cluster_status()
                .await
                .map_err(|e| leitstand_proto::error_chain(&e));
            if polled
                .send(Event::Net(NetEvent::Cluster(result)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// Starts `command` as a task that reports back as an event.
pub(crate) fn spawn_command(
    client: &Arc<OperatorClient>,
    tx: &mpsc::Sender<Event>,
    command: Command,
) {
    let client = Arc::clone(client);
    let tx = tx.clone();
    tokio::spawn(async move {
        let event = match command {
            Command::Send(action) => {
                let result = match &action {
                    Action::Approve { decision_id } => client.approve(decision_id).await,
                    Action::Reject {
                        decision_id,
                        reason,
                    } => client.reject(decision_id, reason).await,
                }
                .map_err(|e| leitstand_proto::error_chain(&e));
                NetEvent::Action { action, result }
            }
            Command::LoadAudit { from } => NetEvent::Audit(
                client
                    .audit(from, 1000)
                    .await
                    .map_err(|e| leitstand_proto::error_chain(&e)),
            ),
            // The main loop hands these to the sandbox itself.
            Command::Sandbox(_) => return,
        };
        let _ = tx.send(Event::Net(event)).await;
    });
}
