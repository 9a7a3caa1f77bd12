//! The dashboard's state and what each event does to it. No network, no
//! terminal: events come in, [`Command`]s go out for the main loop to
//! start, and `views` draws from `&App`. So every key can be tested.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};

use super::event::{Action, Command, Event, NetEvent, SandboxRequest};
use super::i18n::{Lang, T};
use super::theme::{Theme, Tone};
use super::view_model::Model;
use crate::client::WatchUpdate;
use crate::view::{CallerRole, Decision, View};

/// The views, in the order of their digit keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Agents,
    Decisions,
    Approvals,
    Audit,
    Cluster,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Overview,
        Tab::Agents,
        Tab::Decisions,
        Tab::Approvals,
        Tab::Audit,
        Tab::Cluster,
    ];

    pub(crate) fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub(crate) fn title(self) -> T {
        match self {
            Tab::Overview => T::TabOverview,
            Tab::Agents => T::TabAgents,
            Tab::Decisions => T::TabDecisions,
            Tab::Approvals => T::TabApprovals,
            Tab::Audit => T::TabAudit,
            Tab::Cluster => T::TabCluster,
        }
    }
}

/// A window over the current view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Popup {
    Help,
    /// Details of the selected line of the current view.
    Details,
    ConfirmApprove {
        decision_id: String,
    },
    Reject {
        decision_id: String,
        reason: String,
        /// Enter was pressed without a reason.
        missing: bool,
    },
}

/// How the dashboard starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub lang: Lang,
    pub theme: Theme,
    /// The configured controllers, for "reconnecting to …".
    pub controllers: Vec<String>,
}

#[derive(Debug)]
pub struct App {
    pub(crate) model: Model,
    pub(crate) lang: Lang,
    pub(crate) theme: Theme,
    pub(crate) controllers: Vec<String>,
    pub(crate) tab: Tab,
    selected: [usize; 6],
    pub(crate) filter: String,
    /// Keys go into the filter.
    pub(crate) filtering: bool,
    pub(crate) popup: Option<Popup>,
    /// The outcome of the last action, or why a key did nothing.
    pub(crate) message: Option<(Tone, String)>,
    /// `b` and `h` break and repair the primary path of `leitstand dev`.
    pub(crate) sandbox_keys: bool,
    quit: bool,
}

impl App {
    pub fn new(options: Options) -> Self {
        App {
            model: Model::default(),
            lang: options.lang,
            theme: options.theme,
            controllers: options.controllers,
            tab: Tab::Overview,
            selected: [0; 6],
            filter: String::new(),
            filtering: false,
            popup: None,
            message: None,
            sandbox_keys: false,
            quit: false,
        }
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    pub fn tab(&self) -> Tab {
        self.tab
    }

    /// The last view, with every delta applied.
    pub fn view(&self) -> Option<&View> {
        self.model.view.as_ref()
    }

    pub(crate) fn role(&self) -> CallerRole {
        self.view().map_or(CallerRole::Unknown, |v| v.caller_role)
    }

    /// Index of the selected line among `len` lines.
    pub(crate) fn selected(&self, len: usize) -> usize {
        self.selected[self.tab.index()].min(len.saturating_sub(1))
    }

    /// Handles one event at wall-clock time `now_unix_ms`; returns network
    /// work for the main loop to start.
    pub fn event(&mut self, event: Event, now_unix_ms: i64) -> Option<Command> {
        match event {
            Event::Key(key) => self.key(key),
            Event::Mouse(mouse) => self.mouse(mouse),
            Event::Resize(..) | Event::Tick => None,
            Event::Net(net) => {
                self.net(net, now_unix_ms);
                None
            }
        }
    }

    /// A Watch update, as the network task delivers it.
    pub fn on_watch(&mut self, update: WatchUpdate, now_unix_ms: i64) {
        self.model.on_watch(update, now_unix_ms);
    }

    fn net(&mut self, net: NetEvent, now_unix_ms: i64) {
        match net {
            NetEvent::Watch(update) => self.model.on_watch(update, now_unix_ms),
            NetEvent::Cluster(result) => self.model.on_cluster(result, now_unix_ms),
            NetEvent::Audit(result) => {
                if let Err(error) = &result {
                    self.message = Some((
                        Tone::Bad,
                        self.lang.fill(T::AuditFailed, &[("error", error)]),
                    ));
                }
                self.model.on_audit(result);
            }
            NetEvent::Action { action, result } => {
                let (name, id) = (self.action_name(&action), action.decision_id());
                self.message = Some(match result {
                    Ok(reply) => (
                        Tone::Good,
                        self.lang.fill(
                            T::ActionDone,
                            &[
                                ("action", name),
                                ("id", id),
                                ("index", &reply.committed_index.to_string()),
                                ("audit", &reply.audit_index.to_string()),
                            ],
                        ),
                    ),
                    Err(error) => (
                        Tone::Bad,
                        self.lang.fill(
                            T::ActionFailed,
                            &[("action", name), ("id", id), ("error", &error)],
                        ),
                    ),
                });
            }
        }
    }

    fn action_name(&self, action: &Action) -> &'static str {
        match action {
            Action::Approve { .. } => self.lang.t(T::ActionApprove),
            Action::Reject { .. } => self.lang.t(T::ActionReject),
        }
    }

    fn key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if let Some(popup) = self.popup.take() {
            return self.popup_key(popup, key);
        }
        if self.filtering {
            match key.code {
                KeyCode::Enter => self.filtering = false,
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if self.filter.chars().count() < 64 => {
                    self.filter.push(c);
                    self.selected[self.tab.index()] = 0;
                }
                _ => {}
            }
            return None;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Tab => return self.switch((self.tab.index() + 1) % Tab::ALL.len()),
            KeyCode::BackTab => {
                return self.switch((self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len());
            }
            KeyCode::Char(c @ '1'..='6') => {
                return self.switch(c as usize - '1' as usize);
            }
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::PageDown => self.step(10),
            KeyCode::PageUp => self.step(-10),
            KeyCode::Home | KeyCode::Char('g') => self.selected[self.tab.index()] = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected[self.tab.index()] = usize::MAX,
            KeyCode::Char('/') => {
                self.filtering = true;
                self.message = None;
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.message = None;
            }
            KeyCode::Char('?') => self.popup = Some(Popup::Help),
            KeyCode::Enter if self.lines() > 0 => self.popup = Some(Popup::Details),
            KeyCode::Char('a') => self.begin(false),
            KeyCode::Char('r') => self.begin(true),
            KeyCode::Char('R') | KeyCode::F(5) if self.tab == Tab::Audit => {
                return self.load_audit();
            }
            KeyCode::Char('b') if self.sandbox_keys => {
                self.message = Some((Tone::Neutral, self.lang.t(T::SandboxBreaking).to_owned()));
                return Some(Command::Sandbox(SandboxRequest::BreakPrimary));
            }
            KeyCode::Char('h') if self.sandbox_keys => {
                self.message = Some((Tone::Neutral, self.lang.t(T::SandboxRepairing).to_owned()));
                return Some(Command::Sandbox(SandboxRequest::RepairPrimary));
            }
            _ => {}
        }
        None
    }

    fn popup_key(&mut self, popup: Popup, key: KeyEvent) -> Option<Command> {
        match popup {
            Popup::Help | Popup::Details => {
                if !matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?' | 'q')
                ) {
                    self.popup = Some(popup);
                }
                None
            }
            Popup::ConfirmApprove { decision_id } => match key.code {
                KeyCode::Char('y' | 'Y') => Some(self.send(Action::Approve { decision_id })),
                KeyCode::Char('n' | 'N') | KeyCode::Esc => None,
                _ => {
                    self.popup = Some(Popup::ConfirmApprove { decision_id });
                    None
                }
            },
            Popup::Reject {
                decision_id,
                mut reason,
                mut missing,
            } => {
                match key.code {
                    KeyCode::Esc => return None,
                    KeyCode::Enter if reason.trim().is_empty() => missing = true,
                    KeyCode::Enter => {
                        let reason = reason.trim().to_owned();
                        return Some(self.send(Action::Reject {
                            decision_id,
                            reason,
                        }));
                    }
                    KeyCode::Backspace => {
                        reason.pop();
                    }
                    KeyCode::Char(c) if reason.len() + c.len_utf8() <= 1024 => {
                        reason.push(c);
                        missing = false;
                    }
                    _ => {}
                }
                self.popup = Some(Popup::Reject {
                    decision_id,
                    reason,
                    missing,
                });
                None
            }
        }
    }

    fn send(&mut self, action: Action) -> Command {
        self.message = Some((
            Tone::Neutral,
            self.lang.fill(
                T::Sending,
                &[
                    ("action", self.action_name(&action)),
                    ("id", action.decision_id()),
                ],
            ),
        ));
        Command::Send(action)
    }

    /// Why the caller may not approve or reject, if it may not.
    pub(crate) fn refusal(&self, reject: bool) -> Option<String> {
        let role = self.role();
        (!role.may_act()).then(|| {
            let action = if reject {
                T::ActionReject
            } else {
                T::ActionApprove
            };
            self.lang.fill(
                T::NeedsRole,
                &[
                    ("action", self.lang.t(action)),
                    ("role", self.lang.role(role)),
                ],
            )
        })
    }

    /// `a` or `r`: opens the confirmation, or says why not.
    fn begin(&mut self, reject: bool) {
        if !matches!(self.tab, Tab::Approvals | Tab::Decisions) {
            return;
        }
        if let Some(reason) = self.refusal(reject) {
            self.message = Some((Tone::Warn, reason));
            return;
        }
        let Some(decision) = self.selected_decision() else {
            self.message = Some((Tone::Warn, self.lang.t(T::NothingSelected).to_owned()));
            return;
        };
        if !decision.is_pending() {
            let stage = self.lang.stage(decision.stage).0;
            self.message = Some((
                Tone::Warn,
                self.lang.fill(
                    T::NotPending,
                    &[("id", &decision.decision_id), ("stage", &stage)],
                ),
            ));
            return;
        }
        let decision_id = decision.decision_id.clone();
        self.message = None;
        self.popup = Some(if reject {
            Popup::Reject {
                decision_id,
                reason: String::new(),
                missing: false,
            }
        } else {
            Popup::ConfirmApprove { decision_id }
        });
    }

    fn switch(&mut self, index: usize) -> Option<Command> {
        self.tab = Tab::ALL[index.min(Tab::ALL.len() - 1)];
        self.filter.clear();
        self.filtering = false;
        if self.tab == Tab::Audit && self.model.audit.is_empty() && !self.model.audit_loading {
            return self.load_audit();
        }
        None
    }

    fn load_audit(&mut self) -> Option<Command> {
        if self.model.audit_loading {
            return None;
        }
        self.model.audit_loading = true;
        Some(Command::LoadAudit {
            from: self.model.last_audit_index() + 1,
        })
    }

    fn step(&mut self, by: isize) {
        let len = self.lines();
        let at = self.selected(len);
        self.selected[self.tab.index()] = at.saturating_add_signed(by).min(len.saturating_sub(1));
    }

    fn mouse(&mut self, mouse: MouseEvent) -> Option<Command> {
        match mouse.kind {
            MouseEventKind::ScrollDown => self.step(3),
            MouseEventKind::ScrollUp => self.step(-3),
            MouseEventKind::Down(_) if mouse.row == 0 && self.popup.is_none() => {
                let mut x = 0u16;
                for (i, tab) in Tab::ALL.iter().enumerate() {
                    let width = super::views::tab_label(self, *tab).chars().count() as u16;
                    if mouse.column >= x && mouse.column < x + width {
                        return self.switch(i);
                    }
                    x += width;
                }
            }
            _ => {}
        }
        None
    }

    /// Lines of the current view after the filter.
    pub(crate) fn lines(&self) -> usize {
        match self.tab {
            Tab::Overview => self.services().len(),
            Tab::Agents => self.agents().len(),
            Tab::Decisions => self.decisions(false).len(),
            Tab::Approvals => self.decisions(true).len(),
            Tab::Audit => self.audit().len(),
            Tab::Cluster => self
                .model
                .cluster_status()
                .map_or(0, |(s, _)| s.members.len()),
        }
    }

    fn matches(&self, fields: &[&str]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        fields.iter().any(|f| f.to_lowercase().contains(&needle))
    }

    /// Indices of the services shown.
    pub(crate) fn services(&self) -> Vec<usize> {
        let Some(view) = self.view() else {
            return Vec::new();
        };
        (0..view.services.len())
            .filter(|i| {
                let s = &view.services[*i];
                self.matches(&[&s.name, &s.active_path])
                    || s.paths.iter().any(|p| self.matches(&[&p.name]))
            })
            .collect()
    }

    pub(crate) fn agents(&self) -> Vec<usize> {
        let Some(view) = self.view() else {
            return Vec::new();
        };
        (0..view.agents.len())
            .filter(|i| {
                let a = &view.agents[*i];
                self.matches(&[&a.agent_id, &a.version])
                    || a.checks.iter().any(|c| self.matches(&[&c.name]))
            })
            .collect()
    }

    /// Indices of the decisions shown; only pending ones for Approvals.
    pub(crate) fn decisions(&self, pending: bool) -> Vec<usize> {
        let Some(view) = self.view() else {
            return Vec::new();
        };
        (0..view.decisions.len())
            .filter(|i| {
                let d = &view.decisions[*i];
                (!pending || d.is_pending())
                    && self.matches(&[&d.decision_id, &d.service, &d.from_path, &d.to_path])
            })
            .collect()
    }

    pub(crate) fn audit(&self) -> Vec<usize> {
        (0..self.model.audit.len())
            .filter(|i| {
                let e = &self.model.audit[*i];
                self.matches(&[&e.actor, &e.kind, &e.body_json])
            })
            .collect()
    }

    /// The decision under the cursor in Decisions or Approvals.
    pub(crate) fn selected_decision(&self) -> Option<&Decision> {
        let view = self.view()?;
        let shown = match self.tab {
            Tab::Decisions => self.decisions(false),
            Tab::Approvals => self.decisions(true),
            _ => return None,
        };
        let at = *shown.get(self.selected(shown.len()))?;
        view.decisions.get(at)
    }
}
