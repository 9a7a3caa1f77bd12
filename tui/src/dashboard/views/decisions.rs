//! Decisions (lifecycle and evidence) and Approvals (the proposed ones,
//! with their evidence and the confirmation before approve or reject).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Wrap};

use super::{action_keys, empty, popup, state_cell, table, window};
use crate::dashboard::app::App;
use crate::dashboard::i18n::T;
use crate::dashboard::theme::Tone;
use crate::view::{Decision, Stage};

pub(super) fn draw_list(app: &App, frame: &mut Frame<'_>, area: Rect, now: i64) {
    let shown = app.decisions(false);
    if shown.is_empty() {
        return empty(app, frame, area, T::NoDecisions);
    }
    list(app, frame, area, &shown, now, false);
}

fn list(app: &App, frame: &mut Frame<'_>, area: Rect, shown: &[usize], now: i64, waiting: bool) {
    let lang = app.lang;
    let Some(view) = app.view() else { return };
    let selected = app.selected(shown.len());
    let wide = area.width >= 100;
    let rows = window(
        selected,
        shown.len(),
        usize::from(area.height.saturating_sub(1)),
    )
    .map(|n| {
        let d = &view.decisions[shown[n]];
        let mut cells = vec![
            Cell::from(d.decision_id.clone()),
            Cell::from(d.service.clone()),
            Cell::from(format!("{} → {}", d.from_path, d.to_path)),
            state_cell(app, lang.stage(d.stage)),
        ];
        if wide {
            cells.push(Cell::from(lang.mode(d.mode)));
        }
        cells.push(Cell::from(if waiting {
            lang.ago(now, d.proposed_at_unix_ms)
        } else {
            lang.ago(now, d.updated_at_unix_ms)
        }));
        (n == selected, cells)
    })
    .collect();
    let mut header = vec![
        lang.t(T::ColId),
        lang.t(T::ColService),
        lang.t(T::ColChange),
        lang.t(T::ColStage),
    ];
    let mut widths = vec![
        Constraint::Length(if wide { 12 } else { 8 }),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(if wide { 20 } else { 15 }),
    ];
    if wide {
        header.push(lang.t(T::ColMode));
        widths.push(Constraint::Length(12));
    }
    header.push(lang.t(if waiting {
        T::ColWaiting
    } else {
        T::ColUpdated
    }));
    widths.push(Constraint::Length(if wide { 17 } else { 15 }));
    frame.render_widget(table(app, header, rows, widths), area);
}

pub(super) fn draw_approvals(app: &App, frame: &mut Frame<'_>, area: Rect, now: i64) {
    let shown = app.decisions(true);
    if shown.is_empty() {
        return empty(app, frame, area, T::NothingPending);
    }
    let list_height = (shown.len() as u16 + 1).min(area.height / 2).max(2);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(area);
    list(app, frame, top, &shown, now, true);
    let Some(decision) = app.selected_decision() else {
        return;
    };
    let mut lines = vec![Line::from(action_keys(app))];
    lines.extend(facts(app, decision, now));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), bottom);
}

/// What a person needs to judge a decision: the change, where it stands,
/// who acted, and the evidence that crossed the thresholds.
fn facts(app: &App, d: &Decision, now: i64) -> Vec<Line<'static>> {
    let lang = app.lang;
    let token = d.fencing_token.map_or_else(
        || "-".to_owned(),
        |(term, index)| format!("({term}, {index})"),
    );
    let mut lines = vec![
        Line::from(Span::styled(
            format!("{} · {}", d.decision_id, lang.stage(d.stage).0),
            app.theme.header(),
        )),
        Line::from(lang.fill(
            T::DecisionFacts,
            &[
                ("service", &d.service),
                ("from", &d.from_path),
                ("to", &d.to_path),
                ("mode", lang.mode(d.mode)),
                ("runbook", &d.runbook_version.to_string()),
                ("token", &token),
            ],
        )),
        lifecycle(app, d.stage),
    ];
    if !d.operator.is_empty() || !d.reason.is_empty() {
        let operator = if d.operator.is_empty() {
            "-"
        } else {
            &d.operator
        };
        lines.push(Line::from(lang.fill(
            T::ByOperator,
            &[("operator", operator), ("reason", &d.reason)],
        )));
    }
    lines.push(Line::from(Span::styled(
        format!("{}:", lang.t(T::Evidence)),
        app.theme.header(),
    )));
    if d.evidence.is_empty() {
        lines.push(Line::from(format!("  {}", lang.t(T::NoEvidence))));
    }
    for e in &d.evidence {
        let (status, tone) = lang.check_state(e.status);
        let age = crate::format::duration(u64::try_from(now - e.observed_at_unix_ms).unwrap_or(0));
        let text = lang.fill(
            T::EvidenceLine,
            &[
                ("agent", &e.agent_id),
                ("check", &e.check),
                ("path", &e.path),
                ("status", &status),
                ("count", &e.consecutive.to_string()),
                ("age", &age),
            ],
        );
        lines.push(Line::from(Span::styled(
            format!("  {text}"),
            app.theme.tone(tone),
        )));
    }
    lines
}

/// "Lifecycle: ◇ proposed ─ [◆ approved] ─ → dispatched …", the current
/// stage in brackets; an end off the happy path is appended.
fn lifecycle(app: &App, stage: Stage) -> Line<'static> {
    let lang = app.lang;
    let mut spans = vec![Span::raw(format!("{}: ", lang.t(T::Lifecycle)))];
    let on_path = Stage::LIFECYCLE.contains(&stage);
    for (i, step) in Stage::LIFECYCLE.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" ─ "));
        }
        let (text, tone) = lang.stage(*step);
        if *step == stage {
            spans.push(Span::styled(
                format!("[{text}]"),
                app.theme.tone(tone).patch(app.theme.selected()),
            ));
        } else {
            spans.push(Span::raw(text));
        }
    }
    if !on_path {
        let (text, tone) = lang.stage(stage);
        spans.push(Span::raw(" ─ "));
        spans.push(Span::styled(
            format!("[{text}]"),
            app.theme.tone(tone).patch(app.theme.selected()),
        ));
    }
    Line::from(spans)
}

pub(super) fn details(app: &App, now: i64) -> Vec<Line<'static>> {
    app.selected_decision()
        .map(|d| facts(app, d, now))
        .unwrap_or_default()
}

pub(super) fn confirm(app: &App, frame: &mut Frame<'_>, decision_id: &str) {
    let lang = app.lang;
    let Some(d) = app
        .view()
        .and_then(|v| v.decisions.iter().find(|d| d.decision_id == decision_id))
    else {
        return;
    };
    let lines = vec![
        Line::from(lang.fill(
            T::ConfirmApproveBody,
            &[
                ("service", &d.service),
                ("from", &d.from_path),
                ("to", &d.to_path),
            ],
        )),
        Line::default(),
        Line::from(Span::styled(lang.t(T::ConfirmKeys), app.theme.key())),
    ];
    let title = lang.fill(T::ConfirmApproveTitle, &[("id", decision_id)]);
    popup(app, frame, &title, lines, 70);
}

pub(super) fn reject(
    app: &App,
    frame: &mut Frame<'_>,
    decision_id: &str,
    reason: &str,
    missing: bool,
) {
    let lang = app.lang;
    let mut lines = vec![
        Line::from(lang.t(T::RejectPrompt)),
        Line::from(Span::styled(
            format!("> {reason}▏"),
            app.theme.tone(Tone::Active),
        )),
    ];
    if missing {
        lines.push(Line::from(Span::styled(
            format!("✖ {}", lang.t(T::ReasonRequired)),
            app.theme.tone(Tone::Bad),
        )));
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        lang.t(T::RejectKeys),
        app.theme.key(),
    )));
    let title = lang.fill(T::RejectTitle, &[("id", decision_id)]);
    popup(app, frame, &title, lines, 70);
}
