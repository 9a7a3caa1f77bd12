//! Drawing: the frame (tabs, the connection line, the current view, keys
//! and messages) and the windows over it. Everything is drawn from `&App`
//! and the time; any size works, down to 1×1.

mod agents;
mod audit;
mod cluster;
mod decisions;
mod overview;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use super::app::{App, Popup, Tab};
use super::i18n::T;
use super::theme::Tone;
use super::view_model::Connection;

/// Below this the dashboard only says that the window is too small.
const MIN_WIDTH: u16 = 20;
const MIN_HEIGHT: u16 = 6;

/// Draws the whole dashboard as of `now_unix_ms`.
pub fn draw(app: &App, frame: &mut Frame<'_>, now_unix_ms: i64) {
    let area = frame.area();
    frame.render_widget(Block::new().style(app.theme.base()), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        frame.render_widget(
            Paragraph::new(app.lang.t(T::TooSmall)).wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let (tone, status_text) = status(app, now_unix_ms, area.width >= 100);
    // The connection line may take two rows: while disconnected it is the
    // most important line on the screen.
    let status_rows = if Line::from(status_text.as_str()).width() > usize::from(area.width) {
        2
    } else {
        1
    };
    let [tabs, status, body, message, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(status_rows),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(app, frame, tabs);
    frame.render_widget(
        Paragraph::new(Span::styled(status_text, app.theme.tone(tone))).wrap(Wrap { trim: true }),
        status,
    );
    match app.tab {
        Tab::Overview => overview::draw(app, frame, body, now_unix_ms),
        Tab::Agents => agents::draw(app, frame, body, now_unix_ms),
        Tab::Decisions => decisions::draw_list(app, frame, body, now_unix_ms),
        Tab::Approvals => decisions::draw_approvals(app, frame, body, now_unix_ms),
        Tab::Audit => audit::draw(app, frame, body),
        Tab::Cluster => cluster::draw(app, frame, body, now_unix_ms),
    }
    draw_message(app, frame, message);
    draw_keys(app, frame, keys);
    match &app.popup {
        None => {}
        Some(Popup::Help) => {
            let mut text: Vec<Line<'_>> = app.lang.t(T::Help).lines().map(Line::from).collect();
            if app.sandbox_keys {
                text.push(Line::from(app.lang.t(T::HelpSandbox)));
            }
            popup(app, frame, app.lang.t(T::HelpTitle), text, 84);
        }
        Some(Popup::Details) => {
            let lines = match app.tab {
                Tab::Overview => overview::details(app, now_unix_ms),
                Tab::Agents => agents::details(app, now_unix_ms),
                Tab::Decisions | Tab::Approvals => decisions::details(app, now_unix_ms),
                Tab::Audit => audit::details(app),
                Tab::Cluster => cluster::details(app),
            };
            popup(app, frame, app.lang.t(T::DetailsTitle), lines, 100);
        }
        Some(Popup::ConfirmApprove { decision_id }) => {
            decisions::confirm(app, frame, decision_id);
        }
        Some(Popup::Reject {
            decision_id,
            reason,
            missing,
        }) => decisions::reject(app, frame, decision_id, reason, *missing),
    }
}

/// " 1 Overview ", with brackets on the current one so it shows without
/// colour or reverse video too; Approvals counts what waits.
pub(crate) fn tab_label(app: &App, tab: Tab) -> String {
    let mut title = app.lang.t(tab.title()).to_owned();
    if tab == Tab::Approvals
        && let Some(n) = app.view().map(|v| v.pending().count())
        && n > 0
    {
        title = format!("{title} ({n})");
    }
    if tab == app.tab {
        format!("[{} {title}]", tab.index() + 1)
    } else {
        format!(" {} {title} ", tab.index() + 1)
    }
}

fn draw_tabs(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let spans: Vec<Span<'_>> = Tab::ALL
        .iter()
        .map(|tab| {
            let style = if *tab == app.tab {
                app.theme.selected().patch(app.theme.tone(Tone::Active))
            } else {
                Style::new()
            };
            Span::styled(tab_label(app, *tab), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn status(app: &App, now: i64, wide: bool) -> (Tone, String) {
    let lang = app.lang;
    let controllers = app.controllers.join(", ");
    match (app.model.connection(), app.view()) {
        (Connection::Lost { reason, retry_in }, _) => {
            let retry = crate::format::duration(u64::try_from(retry_in.as_millis()).unwrap_or(0));
            let retry = if retry_in.as_millis() < 1000 {
                format!("{} ms", retry_in.as_millis())
            } else {
                retry
            };
            let text = match app.model.last_update_unix_ms {
                Some(at) => lang.fill(
                    T::Lost,
                    &[
                        ("age", &age(now, at)),
                        ("controllers", &controllers),
                        ("retry", &retry),
                        ("reason", &reason),
                    ],
                ),
                None => lang.fill(
                    T::LostNever,
                    &[
                        ("controllers", &controllers),
                        ("retry", &retry),
                        ("reason", &reason),
                    ],
                ),
            };
            (Tone::Bad, format!("✖ {text}"))
        }
        (Connection::Live { address }, Some(view)) => (
            Tone::Good,
            lang.fill(
                T::StatusLine,
                &[
                    ("state", &format!("● {}", lang.t(T::Live))),
                    (
                        "address",
                        &if wide {
                            format!(" · {address}")
                        } else {
                            String::new()
                        },
                    ),
                    ("index", &view.applied_index.to_string()),
                    ("runbook", &view.runbook_version.to_string()),
                    ("role", lang.role(view.caller_role)),
                    (
                        "age",
                        &age(now, app.model.last_update_unix_ms.unwrap_or(now)),
                    ),
                ],
            ),
        ),
        (Connection::Live { address }, None) => (
            Tone::Warn,
            format!("● {address} · {}", lang.t(T::NoViewYet)),
        ),
        (Connection::Connecting, _) => (
            Tone::Warn,
            format!(
                "… {}",
                lang.fill(T::Connecting, &[("controllers", &controllers)])
            ),
        ),
    }
}

fn age(now: i64, then: i64) -> String {
    crate::format::duration(u64::try_from(now.saturating_sub(then)).unwrap_or(0))
}

fn draw_message(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let line = if app.filtering {
        Line::from(app.lang.fill(T::FilterTyping, &[("filter", &app.filter)]))
    } else if let Some((tone, text)) = &app.message {
        Line::from(Span::styled(text.clone(), app.theme.tone(*tone)))
    } else if !app.filter.is_empty() {
        Line::from(app.lang.fill(T::Filter, &[("filter", &app.filter)]))
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_keys(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let mut spans = Vec::new();
    match app.tab {
        Tab::Decisions | Tab::Approvals => {
            spans.extend(action_keys(app));
            spans.push(Span::raw(" · "));
        }
        Tab::Audit => {
            spans.push(Span::styled(app.lang.t(T::KeyReload), app.theme.key()));
            spans.push(Span::raw(" · "));
        }
        _ => {}
    }
    if app.sandbox_keys {
        spans.push(Span::styled(app.lang.t(T::KeysSandbox), app.theme.key()));
        spans.push(Span::raw(" · "));
    }
    spans.push(Span::styled(app.lang.t(T::KeysCommon), app.theme.key()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// "a approve · r reject", disabled with the reason when the role does not
/// allow it.
pub(crate) fn action_keys(app: &App) -> Vec<Span<'static>> {
    let keys = format!(
        "{} · {}",
        app.lang.t(T::KeyApprove),
        app.lang.t(T::KeyReject)
    );
    match app.refusal(false) {
        None => vec![Span::styled(keys, app.theme.key())],
        Some(reason) => vec![
            Span::styled(keys, app.theme.disabled()),
            Span::styled(format!(" (✖ {reason})"), app.theme.tone(Tone::Warn)),
        ],
    }
}

/// The rows `start..end` of `len` that keep `selected` in a window of
/// `height` rows.
pub(crate) fn window(selected: usize, len: usize, height: usize) -> std::ops::Range<usize> {
    if height == 0 || len == 0 {
        return 0..0;
    }
    let start = (selected + 1).saturating_sub(height);
    start..(start + height).min(len)
}

/// A table of `rows` (already windowed) under a header, the selected row
/// reversed and marked with ▸.
pub(crate) fn table<'a>(
    app: &App,
    header: Vec<&'a str>,
    rows: Vec<(bool, Vec<Cell<'a>>)>,
    widths: Vec<Constraint>,
) -> Table<'a> {
    let rows = rows.into_iter().map(|(selected, mut cells)| {
        cells.insert(0, Cell::from(if selected { "▸" } else { " " }));
        let row = Row::new(cells);
        if selected {
            row.style(app.theme.selected())
        } else {
            row
        }
    });
    let mut all = vec![Constraint::Length(1)];
    all.extend(widths);
    let mut header = header;
    header.insert(0, "");
    Table::new(rows, all)
        .header(Row::new(header).style(app.theme.header()))
        .column_spacing(1)
}

/// A cell with a state word and symbol in its tone.
pub(crate) fn state_cell<'a>(app: &App, (text, tone): (String, Tone)) -> Cell<'a> {
    Cell::from(Span::styled(text, app.theme.tone(tone)))
}

/// A line saying there is nothing to show, and why.
pub(crate) fn empty(app: &App, frame: &mut Frame<'_>, area: Rect, key: T) {
    let text = if app.filter.is_empty() {
        app.lang.t(key).to_owned()
    } else {
        app.lang.fill(T::NoMatch, &[("filter", &app.filter)])
    };
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

/// A centred window of at most `max_width` columns over the frame.
pub(crate) fn popup(
    app: &App,
    frame: &mut Frame<'_>,
    title: &str,
    lines: Vec<Line<'_>>,
    max_width: u16,
) {
    let area = frame.area();
    let width = max_width.min(area.width.saturating_sub(2)).max(1);
    // Rows after wrapping (by characters; words may need one more).
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    let height = u16::try_from(rows + 2)
        .unwrap_or(u16::MAX)
        .min(area.height.saturating_sub(2))
        .max(1);
    let rect = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .style(app.theme.base())
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .border_style(app.theme.border())
                    .title(Span::styled(format!(" {title} "), app.theme.header())),
            ),
        rect,
    );
}

/// A text sparkline of `width` columns from percentages, newest right.
pub(crate) fn sparkline(samples: Option<&std::collections::VecDeque<u8>>, width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(samples) = samples else {
        return " ".repeat(width);
    };
    let shown = samples.len().min(width);
    let mut out = " ".repeat(width - shown);
    for value in samples.iter().skip(samples.len() - shown) {
        let level = (usize::from(*value.min(&100)) * 8).div_ceil(100);
        out.push(BARS[level]);
    }
    out
}
