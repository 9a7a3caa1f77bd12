//! `leitstand bench dashboard`: the dashboard's frame time and this
//! process's memory with 1 000 agents and 200 services (DESIGN.md §10:
//! ≤ 33 ms per frame, ≤ 50 MiB).
//!
//! A frame is what the dashboard's main loop does per wake-up: apply a
//! Watch delta (50 agents with new metrics), handle a key (move down;
//! every 100 frames the next view, so all six are measured), and draw
//! into a 160×48 `TestBackend` (layout, widgets, and the diff against the
//! previous frame; only the terminal write is left out). Deltas are
//! decoded before the clock starts, as the network task does that off the
//! UI thread. Memory is VmRSS/VmHWM of this process from /proc after the
//! frames: the real dashboard runs in the same `leitstand` binary.

use std::time::Duration;

use anyhow::Context;
use leitstand_proto::v1;
use leitstand_tui::dashboard::{App, Event, Lang, Options, Tab, Theme, ThemeName, fixture};
use leitstand_tui::{Delta, View, WatchUpdate};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tokio::time::Instant;

const AGENTS: usize = 1_000;
const SERVICES: usize = 200;
const CHANGED_PER_FRAME: usize = 50;
const FRAMES: usize = 1_200;
const FRAME_BUDGET_MS: f64 = 33.0;
const RSS_BUDGET_MIB: f64 = 50.0;

pub(super) fn run() -> anyhow::Result<serde_json::Value> {
    let before = super::sample(std::process::id())?;
    let mut app = App::new(Options {
        lang: Lang::En,
        theme: Theme::new(ThemeName::Default, true),
        controllers: vec!["127.0.0.1:7401".to_owned()],
    });
    let started = Instant::now();
    let view = View::try_from(fixture::large(AGENTS, SERVICES)).context("the large view")?;
    let decode_full = started.elapsed();
    let started = Instant::now();
    app.on_watch(
        WatchUpdate::Connected {
            address: "127.0.0.1:7401".to_owned(),
        },
        fixture::NOW,
    );
    app.on_watch(WatchUpdate::Full(Box::new(view)), fixture::NOW);
    let apply_full = started.elapsed();

    let mut terminal = Terminal::new(TestBackend::new(160, 48)).context("test terminal")?;
    let mut frames: Vec<(Tab, Duration)> = Vec::with_capacity(FRAMES);
    for frame in 0..FRAMES {
        let delta: v1::ViewDelta = fixture::large_delta(frame, AGENTS, CHANGED_PER_FRAME);
        let delta = Delta::try_from(delta).context("a delta")?;
        let now = fixture::NOW + frame as i64 * 100;
        let key = if frame % 100 == 0 {
            KeyCode::Tab
        } else {
            KeyCode::Down
        };
        let started = Instant::now();
        app.on_watch(WatchUpdate::Delta(Box::new(delta)), now);
        app.event(Event::Key(KeyEvent::new(key, KeyModifiers::NONE)), now);
        terminal
            .draw(|f| leitstand_tui::dashboard::draw(&app, f, now))
            .context("draw")?;
        frames.push((app.tab(), started.elapsed()));
    }
    let after = super::sample(std::process::id())?;

    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let mut all: Vec<f64> = frames.iter().map(|(_, d)| ms(d)).collect();
    all.sort_by(f64::total_cmp);
    let per_view: serde_json::Map<String, serde_json::Value> = Tab::ALL
        .iter()
        .map(|tab| {
            let mut times: Vec<f64> = frames
                .iter()
                .filter(|(t, _)| t == tab)
                .map(|(_, d)| ms(d))
                .collect();
            times.sort_by(f64::total_cmp);
            (
                format!("{tab:?}").to_lowercase(),
                serde_json::json!({
                    "frames": times.len(),
                    "p50_ms": round(quantile(&times, 0.50)),
                    "max_ms": round(times.last().copied().unwrap_or(0.0)),
                }),
            )
        })
        .collect();
    let (p50, p99, max) = (
        quantile(&all, 0.50),
        quantile(&all, 0.99),
        all.last().copied().unwrap_or(0.0),
    );
    let rss_mib = after.rss_kib as f64 / 1024.0;
    let hwm_mib = after.hwm_kib as f64 / 1024.0;
    Ok(serde_json::json!({
        "benchmark": "dashboard",
        "agents": AGENTS,
        "services": SERVICES,
        "terminal": "160x48",
        "frames": FRAMES,
        "agents_changed_per_frame": CHANGED_PER_FRAME,
        "frame_ms": { "p50": round(p50), "p99": round(p99), "max": round(max) },
        "per_view": per_view,
        "full_view": {
            "decode_ms": round(ms(&decode_full)),
            "apply_ms": round(ms(&apply_full)),
        },
        "memory_mib": {
            "rss_before": round(before.rss_kib as f64 / 1024.0),
            "rss_after": round(rss_mib),
            "peak": round(hwm_mib),
        },
        "load_average": load_average(),
        "budgets": {
            "frame_ms": FRAME_BUDGET_MS,
            "frame_p99_within": p99 <= FRAME_BUDGET_MS,
            "frame_max_within": max <= FRAME_BUDGET_MS,
            "rss_mib": RSS_BUDGET_MIB,
            "rss_within": hwm_mib <= RSS_BUDGET_MIB,
        },
    }))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|f| f.parse().ok())
        .collect()
}
