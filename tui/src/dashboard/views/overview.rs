//! Overview: each service with its paths in priority order, the active
//! path marked ▶, states in words and symbols.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Cell;

use super::{empty, state_cell, table, window};
use crate::dashboard::app::App;
use crate::dashboard::i18n::T;
use crate::dashboard::theme::Tone;
use crate::view::{CheckState, Path, Service};

pub(super) fn draw(app: &App, frame: &mut Frame<'_>, area: Rect, now: i64) {
    let lang = app.lang;
    let (Some(view), shown) = (app.view(), app.services()) else {
        return empty(app, frame, area, T::NoServices);
    };
    if shown.is_empty() {
        return empty(app, frame, area, T::NoServices);
    }
    let selected = app.selected(shown.len());
    // One line per service and per path; the window follows the selected
    // service's line.
    let mut lines: Vec<(usize, Option<&Path>)> = Vec::new();
    let mut selected_line = 0;
    for (n, at) in shown.iter().enumerate() {
        if n == selected {
            selected_line = lines.len();
        }
        let service = &view.services[*at];
        lines.push((n, None));
        lines.extend(service.paths.iter().map(|p| (n, Some(p))));
    }
    let wide = area.width >= 100;
    let rows = window(
        selected_line,
        lines.len(),
        usize::from(area.height.saturating_sub(1)),
    )
    .map(|i| {
        let (n, path) = lines[i];
        let service = &view.services[shown[n]];
        let cells = match path {
            None => service_cells(app, service, now),
            Some(path) => path_cells(app, service, path, now, wide),
        };
        (path.is_none() && n == selected, cells)
    })
    .collect();
    let mut widths = vec![
        Constraint::Min(18),
        Constraint::Length(12),
        Constraint::Length(16),
        Constraint::Length(17),
    ];
    let mut header = vec![
        lang.t(T::ColServicePath),
        lang.t(T::ColMode),
        lang.t(T::ColState),
        lang.t(T::ColSince),
    ];
    if wide {
        widths.push(Constraint::Fill(2));
        header.push(lang.t(T::ColVantage));
    }
    frame.render_widget(table(app, header, rows, widths), area);
}

fn service_cells<'a>(app: &App, s: &Service, now: i64) -> Vec<Cell<'a>> {
    let lang = app.lang;
    let active = s.paths.iter().find(|p| p.name == s.active_path);
    let state = if s.no_healthy_path {
        (format!("✖ {}", lang.t(T::NoHealthyPath)), Tone::Bad)
    } else if s.frozen {
        (format!("‖ {}", lang.t(T::Frozen)), Tone::Warn)
    } else {
        active.map_or_else(
            || (format!("? {}", lang.t(T::Unknown)), Tone::Warn),
            |p| lang.path_state(p.state),
        )
    };
    vec![
        Cell::from(Span::styled(s.name.clone(), app.theme.header())),
        Cell::from(lang.mode(s.mode)),
        state_cell(app, state),
        Cell::from(active.map_or_else(String::new, |p| lang.ago(now, p.since_unix_ms))),
    ]
}

fn path_cells<'a>(app: &App, s: &Service, p: &Path, now: i64, wide: bool) -> Vec<Cell<'a>> {
    let lang = app.lang;
    let name = if p.name == s.active_path {
        Cell::from(Span::styled(
            format!("  ▶ {} ({})", p.name, lang.t(T::Active)),
            app.theme.tone(Tone::Active),
        ))
    } else {
        Cell::from(format!("    {}", p.name))
    };
    let mut cells = vec![
        name,
        Cell::from(""),
        state_cell(app, lang.path_state(p.state)),
        Cell::from(lang.ago(now, p.since_unix_ms)),
    ];
    if wide {
        let spans: Vec<Span<'a>> = p
            .vantage
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                let (word, tone) = lang.check_state(v.last_status);
                let stale = if v.stale {
                    format!(" ({})", lang.t(T::Stale))
                } else {
                    String::new()
                };
                [
                    Span::raw(format!(
                        "{}{}/{} ",
                        if i > 0 { ", " } else { "" },
                        v.agent_id,
                        v.check
                    )),
                    Span::styled(format!("{word}{stale}"), app.theme.tone(tone)),
                ]
            })
            .collect();
        cells.push(Cell::from(Line::from(spans)));
    }
    cells
}

/// The selected service with every path and vantage point.
pub(super) fn details(app: &App, now: i64) -> Vec<Line<'static>> {
    let lang = app.lang;
    let shown = app.services();
    let Some(service) = app
        .view()
        .and_then(|v| v.services.get(*shown.get(app.selected(shown.len()))?))
    else {
        return Vec::new();
    };
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "{} · {} {}",
            service.name,
            lang.t(T::ColMode).to_lowercase(),
            lang.mode(service.mode)
        ),
        app.theme.header(),
    ))];
    if service.frozen {
        lines.push(Line::from(Span::styled(
            format!(
                "‖ {}",
                lang.fill(T::FrozenBecause, &[("reason", &service.frozen_reason)])
            ),
            app.theme.tone(Tone::Warn),
        )));
    }
    if service.no_healthy_path {
        lines.push(Line::from(Span::styled(
            format!("✖ {}", lang.t(T::NoHealthyPath)),
            app.theme.tone(Tone::Bad),
        )));
    }
    for p in &service.paths {
        let (state, tone) = lang.path_state(p.state);
        let marker = if p.name == service.active_path {
            format!("▶ {} ({})", p.name, lang.t(T::Active))
        } else {
            format!("  {}", p.name)
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{marker}: ")),
            Span::styled(state, app.theme.tone(tone)),
            Span::raw(format!(", {}", lang.ago(now, p.since_unix_ms))),
        ]));
        for v in &p.vantage {
            let (status, tone) = lang.check_state(v.last_status);
            let stale = if v.stale {
                format!(" ({})", lang.t(T::Stale))
            } else {
                String::new()
            };
            let age = match v.last_seen_unix_ms {
                ms if ms > 0 => crate::format::duration(u64::try_from(now - ms).unwrap_or(0)),
                _ => lang.t(T::Never).to_owned(),
            };
            let text = lang.fill(
                T::VantageLine,
                &[
                    ("agent", &v.agent_id),
                    ("check", &v.check),
                    ("status", &status),
                    ("stale", &stale),
                    ("age", &age),
                ],
            );
            let tone = if v.stale || v.last_status == CheckState::Unknown {
                Tone::Warn
            } else {
                tone
            };
            lines.push(Line::from(Span::styled(
                format!("      {text}"),
                app.theme.tone(tone),
            )));
        }
    }
    lines
}
