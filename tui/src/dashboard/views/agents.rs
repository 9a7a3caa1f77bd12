//! Agents: connection, last report, CPU and memory with sparklines of the
//! last samples, and check states counted by word.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Cell;

use super::{empty, sparkline, state_cell, table, window};
use crate::dashboard::app::App;
use crate::dashboard::i18n::T;
use crate::format::bytes;
use crate::view::{Agent, CheckState};

pub(super) fn draw(app: &App, frame: &mut Frame<'_>, area: Rect, now: i64) {
    let lang = app.lang;
    let (Some(view), shown) = (app.view(), app.agents()) else {
        return empty(app, frame, area, T::NoAgents);
    };
    if shown.is_empty() {
        return empty(app, frame, area, T::NoAgents);
    }
    let selected = app.selected(shown.len());
    // Sparklines grow with the window: 4 columns at 80, up to 24.
    let spark = usize::from(area.width.saturating_sub(72) / 4).clamp(4, 24);
    let metric = (spark + 5) as u16;
    let rows = window(
        selected,
        shown.len(),
        usize::from(area.height.saturating_sub(1)),
    )
    .map(|n| {
        let agent = &view.agents[shown[n]];
        (
            n == selected,
            cells(app, agent, now, spark, area.width >= 100),
        )
    })
    .collect();
    let widths = vec![
        Constraint::Min(14),
        Constraint::Length(14),
        Constraint::Length(15),
        Constraint::Length(metric),
        Constraint::Length(metric),
        Constraint::Fill(1),
    ];
    let header = vec![
        lang.t(T::ColAgent),
        lang.t(T::ColState),
        lang.t(T::ColLastSeen),
        lang.t(T::ColCpu),
        lang.t(T::ColMemory),
        lang.t(T::ColChecks),
    ];
    frame.render_widget(table(app, header, rows, widths), area);
}

fn cells<'a>(app: &App, agent: &Agent, now: i64, spark: usize, wide: bool) -> Vec<Cell<'a>> {
    let lang = app.lang;
    let history = app.model.history.get(&agent.agent_id);
    let (cpu, memory) = match &agent.host {
        Some(host) => (
            format!(
                "{} {:>3}%",
                sparkline(history.map(|h| &h.cpu), spark),
                (host.cpu_utilization * 100.0).round()
            ),
            format!(
                "{} {:>3}%",
                sparkline(history.map(|h| &h.memory), spark),
                (host.memory_share() * 100.0).round()
            ),
        ),
        None => (lang.t(T::NoMetrics).to_owned(), String::new()),
    };
    vec![
        Cell::from(agent.agent_id.clone()),
        state_cell(app, lang.connected(agent.connected)),
        Cell::from(lang.ago(now, agent.last_seen_unix_ms)),
        Cell::from(cpu),
        Cell::from(memory),
        Cell::from(check_counts(app, agent, wide)),
    ]
}

/// "✖ 1 critical · ✔ 3 ok": only the states that occur, worst first;
/// when narrow, only the worst.
fn check_counts<'a>(app: &App, agent: &Agent, wide: bool) -> Line<'a> {
    let mut spans = Vec::new();
    for state in [
        CheckState::Critical,
        CheckState::Warning,
        CheckState::Unknown,
        CheckState::Ok,
    ] {
        let n = agent.checks.iter().filter(|c| c.status == state).count();
        if n == 0 {
            continue;
        }
        let (word, tone) = app.lang.check_state(state);
        let (symbol, word) = word.split_once(' ').unwrap_or(("", &word));
        if !spans.is_empty() {
            if !wide {
                break;
            }
            spans.push(Span::raw(" · "));
        }
        spans.push(Span::styled(
            format!("{symbol} {n} {word}"),
            app.theme.tone(tone),
        ));
    }
    Line::from(spans)
}

pub(super) fn details(app: &App, now: i64) -> Vec<Line<'static>> {
    let lang = app.lang;
    let shown = app.agents();
    let Some(agent) = app
        .view()
        .and_then(|v| v.agents.get(*shown.get(app.selected(shown.len()))?))
    else {
        return Vec::new();
    };
    let (state, tone) = lang.connected(agent.connected);
    let age = crate::format::duration(u64::try_from(now - agent.last_seen_unix_ms).unwrap_or(0));
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{} ", agent.agent_id), app.theme.header()),
            Span::styled(state, app.theme.tone(tone)),
        ]),
        Line::from(lang.fill(
            T::AgentFacts,
            &[
                ("version", &agent.version),
                ("seq", &agent.last_seq.to_string()),
                ("age", &age),
            ],
        )),
    ];
    match &agent.host {
        Some(h) => lines.push(Line::from(lang.fill(
            T::HostLine,
            &[
                ("cpu", &format!("{:.0}", h.cpu_utilization * 100.0)),
                ("used", &bytes(h.memory_used_bytes)),
                ("total", &bytes(h.memory_total_bytes)),
                ("mem", &format!("{:.0}", h.memory_share() * 100.0)),
                ("load", &format!("{:.2}", h.load_average_1m)),
                (
                    "uptime",
                    &crate::format::duration(h.uptime_seconds.saturating_mul(1000)),
                ),
            ],
        ))),
        None => lines.push(Line::from(lang.t(T::NoMetrics))),
    }
    let history = app.model.history.get(&agent.agent_id);
    lines.push(Line::from(format!(
        "{:<9}{}",
        lang.t(T::ColCpu),
        sparkline(history.map(|h| &h.cpu), 48)
    )));
    lines.push(Line::from(format!(
        "{:<9}{}",
        lang.t(T::ColMemory),
        sparkline(history.map(|h| &h.memory), 48)
    )));
    lines.push(Line::from(Span::styled(
        lang.t(T::ColChecks),
        app.theme.header(),
    )));
    for c in &agent.checks {
        let (status, tone) = lang.check_state(c.status);
        lines.push(Line::from(vec![
            Span::raw(format!("  {:<24} ", c.name)),
            Span::styled(format!("{status:<14}"), app.theme.tone(tone)),
            Span::raw(format!(" {}", c.summary)),
        ]));
    }
    lines
}
