//! Cluster: members, leader, term, commit and applied index, follower
//! lag — from the periodic ClusterStatus (the view's copy until then).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Wrap};

use super::{empty, table, window};
use crate::cluster::{ClusterStatus, Role};
use crate::dashboard::app::App;
use crate::dashboard::i18n::T;
use crate::dashboard::theme::Tone;

pub(super) fn draw(app: &App, frame: &mut Frame<'_>, area: Rect, now: i64) {
    let lang = app.lang;
    let Some((status, at)) = app.model.cluster_status() else {
        if let Some(error) = &app.model.cluster_error {
            let text = lang.fill(T::ClusterError, &[("error", error)]);
            frame.render_widget(
                Paragraph::new(Span::styled(text, app.theme.tone(Tone::Bad)))
                    .wrap(Wrap { trim: true }),
                area,
            );
            return;
        }
        return empty(app, frame, area, T::NoCluster);
    };
    let mut summary = summary(app, status);
    if let Some(at) = at {
        summary.push(Line::from(lang.fill(
            T::ClusterAsOf,
            &[
                ("node", &status.answered_by.to_string()),
                (
                    "age",
                    &crate::format::duration(u64::try_from(now - at).unwrap_or(0)),
                ),
            ],
        )));
    }
    if let Some(error) = &app.model.cluster_error {
        summary.push(Line::from(Span::styled(
            lang.fill(T::ClusterError, &[("error", error)]),
            app.theme.tone(Tone::Bad),
        )));
    }
    let [top, bottom] = Layout::vertical([
        Constraint::Length(summary.len() as u16 + 1),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary), top);

    let known = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let selected = app.selected(status.members.len());
    let rows = window(
        selected,
        status.members.len(),
        usize::from(bottom.height.saturating_sub(1)),
    )
    .map(|n| {
        let m = &status.members[n];
        let (role, tone) = match m.role {
            Role::Leader => (format!("★ {}", lang.t(T::Leader)), Tone::Active),
            Role::Follower => (format!("● {}", lang.t(T::Follower)), Tone::Neutral),
            Role::Learner => (format!("○ {}", lang.t(T::Learner)), Tone::Neutral),
        };
        let contact = match (m.role, m.last_contact_ms_ago) {
            (Role::Leader, _) => "-".to_owned(),
            (_, Some(ms)) => lang.fill(T::Ago, &[("age", &crate::format::duration(ms))]),
            (_, None) => lang.t(T::Unknown).to_owned(),
        };
        let lag_tone = match m.lag {
            Some(lag) if lag > 100 => Tone::Warn,
            _ => Tone::Neutral,
        };
        (
            n == selected,
            vec![
                Cell::from(m.node_id.to_string()),
                Cell::from(m.address.clone()),
                Cell::from(Span::styled(role, app.theme.tone(tone))),
                Cell::from(known(m.match_index)),
                Cell::from(Span::styled(known(m.lag), app.theme.tone(lag_tone))),
                Cell::from(contact),
                Cell::from(lang.t(if m.catching_up { T::Yes } else { T::No })),
            ],
        )
    })
    .collect();
    let header = vec![
        lang.t(T::ColNode),
        lang.t(T::ColAddress),
        lang.t(T::ColRole),
        lang.t(T::ColMatch),
        lang.t(T::ColLag),
        lang.t(T::ColContact),
        lang.t(T::ColCatchingUp),
    ];
    let widths = vec![
        Constraint::Length(6),
        Constraint::Min(15),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Length(8),
    ];
    frame.render_widget(table(app, header, rows, widths), bottom);
}

fn summary(app: &App, s: &ClusterStatus) -> Vec<Line<'static>> {
    let lang = app.lang;
    let mut lines = Vec::new();
    if !s.confirmed_by_quorum {
        lines.push(Line::from(Span::styled(
            lang.fill(
                T::ClusterUnconfirmed,
                &[("node", &s.answered_by.to_string())],
            ),
            app.theme.tone(Tone::Warn),
        )));
    }
    lines.push(match (s.leader_id, &s.leader_address) {
        (Some(id), address) => Line::from(Span::styled(
            format!(
                "★ {}",
                lang.fill(
                    T::ClusterLeader,
                    &[
                        ("id", &id.to_string()),
                        ("address", address.as_deref().unwrap_or("?"))
                    ],
                )
            ),
            app.theme.tone(Tone::Good),
        )),
        (None, _) => Line::from(Span::styled(
            format!("✖ {}", lang.t(T::ClusterNoLeader)),
            app.theme.tone(Tone::Bad),
        )),
    });
    lines.push(Line::from(lang.fill(
        T::ClusterFigures,
        &[
            ("term", &s.term.to_string()),
            ("commit", &s.commit_index.to_string()),
            ("applied", &s.applied_index.to_string()),
            ("first", &s.first_index.to_string()),
            ("last", &s.last_index.to_string()),
            ("snapshot", &s.snapshot_index.to_string()),
        ],
    )));
    if s.joint_configuration {
        lines.push(Line::from(Span::styled(
            lang.t(T::ClusterJoint),
            app.theme.tone(Tone::Warn),
        )));
    }
    lines
}

pub(super) fn details(app: &App) -> Vec<Line<'static>> {
    let lang = app.lang;
    let Some((status, _)) = app.model.cluster_status() else {
        return Vec::new();
    };
    let mut lines = summary(app, status);
    let Some(m) = status.members.get(app.selected(status.members.len())) else {
        return lines;
    };
    let known = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let yes_no = |b: bool| lang.t(if b { T::Yes } else { T::No });
    lines.push(Line::default());
    for (label, value) in [
        (T::ColNode, m.node_id.to_string()),
        (T::ColAddress, m.address.clone()),
        (
            T::ColRole,
            lang.t(match m.role {
                Role::Leader => T::Leader,
                Role::Follower => T::Follower,
                Role::Learner => T::Learner,
            })
            .to_owned(),
        ),
        (T::ColMatch, known(m.match_index)),
        (T::ColLag, known(m.lag)),
        (
            T::ColContact,
            m.last_contact_ms_ago
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        ),
        (T::ColCatchingUp, yes_no(m.catching_up).to_owned()),
    ] {
        lines.push(Line::from(format!("{:<16} {value}", lang.t(label))));
    }
    lines
}
