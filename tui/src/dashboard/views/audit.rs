//! Audit: the hash-chained log as Operator.Audit delivers it, newest at
//! the bottom; scroll and filter.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Cell;

use super::{empty, table, window};
use crate::dashboard::app::App;
use crate::dashboard::i18n::T;
use crate::format::utc;

pub(super) fn draw(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let lang = app.lang;
    let shown = app.audit();
    if shown.is_empty() {
        let key = if app.model.audit_loading {
            T::AuditLoading
        } else {
            T::NoAudit
        };
        return empty(app, frame, area, key);
    }
    let selected = app.selected(shown.len());
    let wide = area.width >= 100;
    let rows = window(
        selected,
        shown.len(),
        usize::from(area.height.saturating_sub(1)),
    )
    .map(|n| {
        let e = &app.model.audit[shown[n]];
        let time = utc(e.at_unix_ms);
        // "2026-11-23 14:02:11 UTC": the time of day alone when narrow.
        let time = if wide {
            time
        } else {
            time.get(11..19).unwrap_or(&time).to_owned()
        };
        (
            n == selected,
            vec![
                Cell::from(e.index.to_string()),
                Cell::from(time),
                Cell::from(e.actor.clone()),
                Cell::from(e.kind.clone()),
                Cell::from(e.body_json.clone()),
            ],
        )
    })
    .collect();
    let widths = vec![
        Constraint::Length(6),
        Constraint::Length(if wide { 23 } else { 10 }),
        Constraint::Length(if wide { 24 } else { 18 }),
        Constraint::Length(if wide { 24 } else { 18 }),
        Constraint::Fill(1),
    ];
    let header = vec![
        lang.t(T::ColIndex),
        lang.t(T::ColTime),
        lang.t(T::ColActor),
        lang.t(T::ColKind),
        lang.t(T::ColEntry),
    ];
    frame.render_widget(table(app, header, rows, widths), area);
}

pub(super) fn details(app: &App) -> Vec<Line<'static>> {
    let shown = app.audit();
    let Some(e) = shown
        .get(app.selected(shown.len()))
        .and_then(|at| app.model.audit.get(*at))
    else {
        return Vec::new();
    };
    let mut lines = vec![
        Line::from(Span::styled(
            format!("#{} · {} · {}", e.index, utc(e.at_unix_ms), e.kind),
            app.theme.header(),
        )),
        Line::from(format!("{}: {}", app.lang.t(T::ColActor), e.actor)),
        Line::from(format!(
            "log {} · prev {} · hash {}",
            e.log_index, e.prev_hash, e.hash
        )),
        Line::default(),
    ];
    // The body as pretty JSON when it is JSON.
    let body = serde_json::from_str::<serde_json::Value>(&e.body_json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| e.body_json.clone());
    lines.extend(body.lines().map(|l| Line::from(l.to_owned())));
    lines
}
