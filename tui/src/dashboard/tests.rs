//! The dashboard drawn into a `TestBackend` from the fixture city:
//! snapshots of every view (80×24 and 160×48, English and German), the
//! same screens without colour, keys, role-disabled actions, deltas, and
//! sizes down to 1×1.
//!
//! Update the snapshots after an intended change with
//! `INSTA_UPDATE=always cargo test -p leitstand-tui --lib` (or
//! `cargo insta test -p leitstand-tui --review` where cargo-insta is
//! installed), then review the diff in `src/dashboard/snapshots/`.

use std::time::Duration;

use leitstand_proto::v1;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::style::Color;

use super::event::{Action, Command, Event, NetEvent};
use super::fixture::{self, NOW};
use super::{App, Lang, Options, Tab, Theme, ThemeName};
use crate::client::WatchUpdate;
use crate::view::{ActionReply, AuditEntry, Delta, Stage, View};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn options(lang: Lang, color: bool) -> Options {
    Options {
        lang,
        theme: Theme::new(ThemeName::Default, color),
        controllers: vec!["10.20.0.1:7401".to_owned(), "10.20.0.2:7401".to_owned()],
    }
}

/// The fixture city as `role` sees it, live, with metric history, the
/// polled cluster status and the audit log loaded.
fn app_with(role: v1::Role, lang: Lang, color: bool) -> App {
    let mut app = App::new(options(lang, color));
    app.on_watch(
        WatchUpdate::Connected {
            address: "10.20.0.1:7401".to_owned(),
        },
        NOW,
    );
    let view = View::try_from(fixture::city(role)).expect("the fixture is valid");
    app.on_watch(WatchUpdate::Full(Box::new(view)), NOW - 12_000);
    for delta in fixture::metric_deltas(30) {
        let delta = Delta::try_from(delta).expect("valid delta");
        app.on_watch(WatchUpdate::Delta(Box::new(delta)), NOW - 2_000);
    }
    let audit = fixture::audit().into_iter().map(AuditEntry::from).collect();
    app.event(Event::Net(NetEvent::Audit(Ok(audit))), NOW);
    app
}

fn app(lang: Lang) -> App {
    app_with(v1::Role::Operator, lang, true)
}

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| super::draw(app, frame, NOW))
        .expect("draw");
    terminal.backend().buffer().clone()
}

/// The screen as text, one line per row, trailing blanks dropped.
fn text(buffer: &Buffer) -> String {
    let width = usize::from(buffer.area.width.max(1));
    buffer
        .content()
        .chunks(width)
        .map(|row| {
            let line: String = row.iter().map(|c| c.symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn screen(app: &App, width: u16, height: u16) -> String {
    text(&render(app, width, height))
}

fn key(app: &mut App, code: KeyCode) -> Option<Command> {
    app.event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)), NOW)
}

fn keys(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// Times and hashes are replaced, so snapshots say what matters.
fn snapshot(name: &str, screen: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[utc]");
    settings.add_filter(r"\b\d{2}:\d{2}:\d{2}\b", "[hh:mm:ss]");
    settings.add_filter(r"[0-9a-f]{64}", "[hash]");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, screen));
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "en",
        Lang::De => "de",
    }
}

#[test]
fn every_view_at_both_sizes_in_both_languages() {
    for lang in [Lang::En, Lang::De] {
        let mut app = app(lang);
        for (n, tab) in Tab::ALL.iter().enumerate() {
            key(&mut app, KeyCode::Char(char::from(b'1' + n as u8)));
            assert_eq!(app.tab(), *tab);
            for (w, h) in SIZES {
                let name = format!("{tab:?}_{w}x{h}_{}", lang_name(lang)).to_lowercase();
                snapshot(&name, &screen(&app, w, h));
            }
        }
    }
}

#[test]
fn without_colour_the_screens_say_the_same_and_have_no_colour() {
    for lang in [Lang::En, Lang::De] {
        let mut coloured = app(lang);
        let mut plain = app_with(v1::Role::Operator, lang, false);
        for n in 0..Tab::ALL.len() {
            let digit = KeyCode::Char(char::from(b'1' + n as u8));
            key(&mut coloured, digit);
            key(&mut plain, digit);
            for (w, h) in SIZES {
                let buffer = render(&plain, w, h);
                assert_eq!(
                    text(&buffer),
                    screen(&coloured, w, h),
                    "{:?} at {w}×{h}: colour must not carry meaning",
                    coloured.tab()
                );
                for cell in buffer.content() {
                    assert!(
                        cell.fg == Color::Reset && cell.bg == Color::Reset,
                        "{:?} at {w}×{h}: {:?} has a colour under NO_COLOR",
                        plain.tab(),
                        cell
                    );
                }
            }
        }
    }
}

#[test]
fn high_contrast_colours_every_cell_and_keeps_the_text() {
    let mut app = app(Lang::En);
    let mut high = App::new(Options {
        theme: Theme::new(ThemeName::HighContrast, true),
        ..options(Lang::En, true)
    });
    std::mem::swap(&mut high.model, &mut app.model);
    let original = app_with(v1::Role::Operator, Lang::En, true);
    let buffer = render(&high, 80, 24);
    assert_eq!(text(&buffer), screen(&original, 80, 24));
    assert!(buffer.content().iter().all(|c| c.bg == Color::Black));
}

#[test]
fn popups_and_states_in_both_languages() {
    for lang in [Lang::En, Lang::De] {
        let l = lang_name(lang);
        let mut app = app(lang);
        key(&mut app, KeyCode::Char('?'));
        snapshot(&format!("help_80x24_{l}"), &screen(&app, 80, 24));
        key(&mut app, KeyCode::Esc);

        key(&mut app, KeyCode::Char('4'));
        key(&mut app, KeyCode::Char('a'));
        snapshot(&format!("approve_confirm_80x24_{l}"), &screen(&app, 80, 24));
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::Char('r'));
        key(&mut app, KeyCode::Enter);
        snapshot(
            &format!("reject_reason_missing_80x24_{l}"),
            &screen(&app, 80, 24),
        );
        key(&mut app, KeyCode::Esc);

        key(&mut app, KeyCode::Char('3'));
        key(&mut app, KeyCode::Enter);
        snapshot(
            &format!("decision_details_160x48_{l}"),
            &screen(&app, 160, 48),
        );
        key(&mut app, KeyCode::Esc);

        key(&mut app, KeyCode::Char('1'));
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Enter);
        snapshot(&format!("service_details_80x24_{l}"), &screen(&app, 80, 24));
        key(&mut app, KeyCode::Esc);

        key(&mut app, KeyCode::Char('2'));
        key(&mut app, KeyCode::Enter);
        snapshot(&format!("agent_details_80x24_{l}"), &screen(&app, 80, 24));

        let viewer = app_with(v1::Role::Viewer, lang, true);
        let mut viewer = viewer;
        key(&mut viewer, KeyCode::Char('4'));
        snapshot(
            &format!("approvals_viewer_80x24_{l}"),
            &screen(&viewer, 80, 24),
        );

        let mut lost = self::app(lang);
        lost.event(
            Event::Net(NetEvent::Watch(WatchUpdate::Disconnected {
                reason: "10.20.0.1:7401: connection refused".to_owned(),
                retry_in: Duration::from_secs(2),
            })),
            NOW,
        );
        snapshot(&format!("disconnected_80x24_{l}"), &screen(&lost, 80, 24));
    }
}

#[test]
fn while_disconnected_the_last_view_stays_and_its_age_is_said() {
    let mut app = app(Lang::En);
    app.event(
        Event::Net(NetEvent::Watch(WatchUpdate::Disconnected {
            reason: "stream ended".to_owned(),
            retry_in: Duration::from_secs(1),
        })),
        NOW,
    );
    // The last update arrived at NOW - 2 s; 2 min 12 s later:
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("test terminal");
    terminal
        .draw(|frame| super::draw(&app, frame, NOW + 132_000))
        .expect("draw");
    let shown = text(terminal.backend().buffer());
    assert!(
        shown.contains("last update 2 min 14 s ago; reconnecting to 10.20.0.1:7401, 10.20.0.2:7401 in 1 s (stream ended)"),
        "{shown}"
    );
    assert!(
        shown.contains("wasserwerk-hengstey"),
        "the last view stays: {shown}"
    );
}

#[test]
fn a_viewer_cannot_approve_and_is_told_why() {
    let mut app = app_with(v1::Role::Viewer, Lang::En, true);
    key(&mut app, KeyCode::Char('4'));
    assert_eq!(key(&mut app, KeyCode::Char('a')), None);
    assert!(app.popup.is_none(), "no confirmation opens for a viewer");
    let shown = screen(&app, 80, 24);
    assert!(
        shown.contains("approve needs the operator role; you are viewer"),
        "{shown}"
    );
    assert_eq!(key(&mut app, KeyCode::Char('r')), None);
    assert!(screen(&app, 80, 24).contains("reject needs the operator role; you are viewer"));

    let mut de = app_with(v1::Role::Viewer, Lang::De, true);
    key(&mut de, KeyCode::Char('4'));
    key(&mut de, KeyCode::Char('a'));
    assert!(screen(&de, 80, 24).contains("Freigeben braucht die Rolle operator; Sie sind viewer"));
}

#[test]
fn an_operator_approves_after_confirming() {
    let mut app = app(Lang::En);
    key(&mut app, KeyCode::Char('4'));
    assert_eq!(
        key(&mut app, KeyCode::Char('a')),
        None,
        "first a confirmation"
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('x')),
        None,
        "other keys do not confirm"
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        Some(Command::Send(Action::Approve {
            decision_id: "d-0042".to_owned()
        }))
    );
    assert!(app.popup.is_none());
    app.event(
        Event::Net(NetEvent::Action {
            action: Action::Approve {
                decision_id: "d-0042".to_owned(),
            },
            result: Ok(ActionReply {
                committed_index: 1240,
                audit_index: 7,
                decision_id: Some("d-0042".to_owned()),
            }),
        }),
        NOW,
    );
    assert!(
        screen(&app, 80, 24)
            .contains("✔ approve d-0042: committed at log index 1240, audit entry 7")
    );
    // Cancelled with n or Esc: nothing is sent.
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(key(&mut app, KeyCode::Char('n')), None);
    assert!(app.popup.is_none());
}

#[test]
fn a_reject_needs_a_reason() {
    let mut app = app(Lang::En);
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        None,
        "no reason, nothing sent"
    );
    assert!(screen(&app, 80, 24).contains("a reason is required"));
    keys(&mut app, "  ");
    assert_eq!(key(&mut app, KeyCode::Enter), None, "blanks are no reason");
    keys(&mut app, "fiber repair in 10 min");
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Command::Send(Action::Reject {
            decision_id: "d-0042".to_owned(),
            reason: "fiber repair in 10 min".to_owned(),
        }))
    );
}

#[test]
fn only_a_proposed_decision_can_be_approved() {
    let mut app = app(Lang::En);
    key(&mut app, KeyCode::Char('3'));
    // Newest first: d-0043 (dispatched) is on top.
    key(&mut app, KeyCode::Char('a'));
    assert!(app.popup.is_none());
    assert!(
        screen(&app, 160, 48).contains("decision d-0043 is → dispatched"),
        "{}",
        screen(&app, 160, 48)
    );
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('a'));
    assert!(app.popup.is_some(), "d-0042 is proposed");
}

#[test]
fn keys_switch_views_move_filter_and_quit() {
    let mut app = app(Lang::En);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.tab(), Tab::Agents);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab(), Tab::Cluster);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(app.selected(app.lines()), 2, "stops at the last agent");
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.selected(app.lines()), 1);
    app.event(
        Event::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollUp,
            column: 10,
            row: 10,
            modifiers: KeyModifiers::NONE,
        }),
        NOW,
    );
    assert_eq!(app.selected(app.lines()), 0);

    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "nord");
    assert!(app.filtering);
    key(&mut app, KeyCode::Enter);
    assert!(!app.filtering);
    assert_eq!(app.lines(), 1);
    let shown = screen(&app, 80, 24);
    assert!(
        shown.contains("rz-nord-1") && !shown.contains("leitstelle-1"),
        "{shown}"
    );
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "zzz");
    assert!(screen(&app, 80, 24).contains("Nothing matches the filter \"nordzzz\"."));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.lines(), 3, "Esc clears the filter");

    // q while typing a filter is a letter, not quit.
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.should_quit());
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit());

    let mut app = self::app(Lang::En);
    app.event(
        Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        NOW,
    );
    assert!(app.should_quit());
}

#[test]
fn a_click_on_a_tab_opens_it_and_the_audit_view_loads_what_is_new() {
    let mut app = App::new(options(Lang::En, true));
    // "[1 Overview]" is 12 columns, " 2 Agents " 10, " 3 Decisions " 13,
    // " 4 Approvals " 13, " 5 Audit " from column 48.
    let click = |column| {
        Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(ratatui::crossterm::event::MouseButton::Left),
            column,
            row: 0,
            modifiers: KeyModifiers::NONE,
        })
    };
    app.event(click(14), NOW);
    assert_eq!(app.tab(), Tab::Agents);
    assert_eq!(
        app.event(click(50), NOW),
        Some(Command::LoadAudit { from: 1 })
    );
    assert_eq!(app.tab(), Tab::Audit);
    assert_eq!(
        key(&mut app, KeyCode::Char('R')),
        None,
        "one load at a time"
    );
    let audit: Vec<AuditEntry> = fixture::audit().into_iter().map(AuditEntry::from).collect();
    app.event(Event::Net(NetEvent::Audit(Ok(audit.clone()))), NOW);
    assert_eq!(
        key(&mut app, KeyCode::Char('R')),
        Some(Command::LoadAudit { from: 7 })
    );
    // Entries already held are not added twice.
    app.event(Event::Net(NetEvent::Audit(Ok(audit))), NOW);
    assert_eq!(app.lines(), 6);
}

#[test]
fn deltas_replace_add_and_remove() {
    let mut view = View::try_from(fixture::city(v1::Role::Operator)).expect("valid");
    let mut portal = fixture::city(v1::Role::Operator).services[2].clone();
    portal.active_path = "rz-nord".to_owned();
    portal.frozen = false;
    let mut new_agent = fixture::city(v1::Role::Operator).agents[0].clone();
    new_agent.agent_id = "aa-first".to_owned();
    let mut decision = fixture::city(v1::Role::Operator).decisions[4].clone();
    decision.stage = v1::DecisionStage::Approved as i32;
    decision.operator = "alice".to_owned();
    let mut cluster = fixture::cluster();
    cluster.leader_id = 2;
    cluster.term = 5;
    let delta = Delta::try_from(v1::ViewDelta {
        applied_index: 1300,
        generated_at_unix_ms: NOW + 5_000,
        services: vec![portal],
        agents: vec![new_agent],
        decisions: vec![decision],
        cluster: Some(cluster),
        removed_services: vec!["wasserwerk-hengstey".to_owned()],
        removed_agents: vec!["rz-nord-1".to_owned()],
    })
    .expect("valid delta");
    view.apply(delta);
    assert_eq!(view.applied_index, 1300);
    let names: Vec<&str> = view.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["leitstelle-uplink", "buergerportal"]);
    assert_eq!(view.services[1].active_path, "rz-nord");
    assert!(!view.services[1].frozen);
    let agents: Vec<&str> = view.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(agents, ["aa-first", "leitstelle-1", "ww-hengstey-1"]);
    let d = view
        .decisions
        .iter()
        .find(|d| d.decision_id == "d-0042")
        .expect("still there");
    assert_eq!((d.stage, d.operator.as_str()), (Stage::Approved, "alice"));
    assert_eq!(view.decisions.len(), 6, "replaced, not added");
    let cluster = view.cluster.as_ref().expect("cluster");
    assert_eq!(
        (cluster.leader_id.map(|n| n.get()), cluster.term),
        (Some(2), 5)
    );

    // An empty delta changes nothing but the index, the cluster stays.
    let before = view.clone();
    view.apply(
        Delta::try_from(v1::ViewDelta {
            applied_index: 1301,
            ..Default::default()
        })
        .expect("valid"),
    );
    assert_eq!(view.services, before.services);
    assert_eq!(view.cluster, before.cluster);
}

#[test]
fn a_full_view_after_a_reconnect_replaces_everything_and_history_follows_agents() {
    let mut app = app(Lang::En);
    assert!(app.model.history["leitstelle-1"].cpu.len() > 20);
    let mut smaller = fixture::city(v1::Role::Operator);
    smaller.agents.truncate(1);
    let view = View::try_from(smaller).expect("valid");
    app.on_watch(WatchUpdate::Full(Box::new(view)), NOW);
    assert_eq!(app.view().map(|v| v.agents.len()), Some(1));
    assert!(!app.model.history.contains_key("leitstelle-1"));
    // A delta before any full view is ignored, not a panic.
    let mut fresh = App::new(options(Lang::En, true));
    let delta = Delta::try_from(fixture::metric_deltas(1).remove(0)).expect("valid");
    fresh.on_watch(WatchUpdate::Delta(Box::new(delta)), NOW);
    assert!(fresh.view().is_none());
}

#[test]
fn any_size_draws_without_panicking() {
    let mut apps = vec![App::new(options(Lang::De, true))];
    for lang in [Lang::En, Lang::De] {
        apps.push(app(lang));
    }
    let mut sizes: Vec<(u16, u16)> = Vec::new();
    for w in [1, 2, 10, 19, 20, 21, 40, 79, 80, 99, 100, 160, 400] {
        for h in [1, 2, 5, 6, 7, 23, 24, 48, 100] {
            sizes.push((w, h));
        }
    }
    let small = [(1, 1), (3, 2), (20, 6), (30, 8), (40, 10), (80, 24)];
    for app in &mut apps {
        for n in 0..Tab::ALL.len() {
            key(app, KeyCode::Char(char::from(b'1' + n as u8)));
            for (w, h) in &sizes {
                render(app, *w, *h);
            }
            for popup in ['?', '\n', 'a', 'r'] {
                match popup {
                    '\n' => key(app, KeyCode::Enter),
                    c => key(app, KeyCode::Char(c)),
                };
                for (w, h) in small {
                    render(app, w, h);
                }
                key(app, KeyCode::Esc);
            }
        }
    }
    // Resizing one terminal through sizes, as a window manager does.
    let app = app(Lang::En);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    for (w, h) in sizes {
        terminal.backend_mut().resize(w, h);
        terminal
            .draw(|frame| super::draw(&app, frame, NOW))
            .expect("draw");
    }
}

#[test]
fn hostile_text_from_the_wire_cannot_move_the_cursor() {
    let mut city = fixture::city(v1::Role::Operator);
    city.services[0].frozen_reason = "\u{1b}[2J\u{1b}[31mcleared".to_owned();
    let view = View::try_from(city).expect("valid");
    assert!(!view.services[0].frozen_reason.contains('\u{1b}'));
}

#[test]
fn sandbox_keys_exist_only_in_the_sandbox_and_show_in_the_footer_and_help() {
    use super::SandboxRequest;
    let mut app = app(Lang::En);
    assert_eq!(key(&mut app, KeyCode::Char('b')), None);
    assert_eq!(key(&mut app, KeyCode::Char('h')), None);
    app.sandbox_keys = true;
    assert_eq!(
        key(&mut app, KeyCode::Char('b')),
        Some(Command::Sandbox(SandboxRequest::BreakPrimary))
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('h')),
        Some(Command::Sandbox(SandboxRequest::RepairPrimary))
    );
    for lang in [Lang::En, Lang::De] {
        let mut app = self::app(lang);
        app.sandbox_keys = true;
        let footer = screen(&app, 160, 48);
        let sandbox = match lang {
            Lang::En => "b break primary",
            Lang::De => "b Primärpfad stören",
        };
        assert!(footer.contains(sandbox), "{footer}");
        key(&mut app, KeyCode::Char('?'));
        let help = screen(&app, 160, 48);
        assert!(help.contains("leitstand dev"), "{help}");
    }
}
