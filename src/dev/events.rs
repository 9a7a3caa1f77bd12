//! `leitstand dev --headless`: what happens, as plain lines. Polls the
//! cluster's view and audit log and the executor's journal, and prints
//! what changed: path states, the active path, each decision's stages,
//! each action the executor ran, each new audit entry.

use std::collections::BTreeMap;
use std::time::Duration;

use leitstand_tui::{PathState, Stage, View};

use super::site::Site;

/// How often the view, the audit log and the journal are read.
const POLL: Duration = Duration::from_millis(300);
/// Audit entries asked for at once.
const AUDIT_BATCH: u64 = 100;
/// The journal is the sandbox's own; past this it is not read further.
const MAX_JOURNAL: u64 = 1 << 20;

/// What was printed last, to print only what changed.
#[derive(Debug, Default)]
struct Seen {
    paths: BTreeMap<(String, String), PathState>,
    active: BTreeMap<String, String>,
    decisions: BTreeMap<String, Stage>,
    audit_next: u64,
    journal_lines: usize,
    unreachable: bool,
}

fn state_word(state: PathState) -> &'static str {
    match state {
        PathState::Unknown => "unknown",
        PathState::Healthy => "healthy",
        PathState::Failed => "failed",
    }
}

fn stage_word(stage: Stage) -> &'static str {
    match stage {
        Stage::Unknown => "unknown",
        Stage::Proposed => "proposed",
        Stage::Approved => "approved",
        Stage::Dispatched => "dispatched",
        Stage::Succeeded => "succeeded",
        Stage::Failed => "failed",
        Stage::TimedOut => "timed out",
        Stage::Verified => "verified",
        Stage::Abandoned => "abandoned",
        Stage::Rejected => "rejected",
    }
}

fn clock() -> String {
    let ms = leitstand_tui::dashboard::now_unix_ms();
    let day = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000
    )
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{}  {line}", clock());
}

/// Prints events until the sandbox stops (the caller drops this future).
pub(super) async fn print(site: &Site) {
    let client = site.client();
    let mut seen = Seen {
        audit_next: 1,
        ..Seen::default()
    };
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        match client.status().await {
            Ok(view) => {
                if seen.unreachable {
                    say("the cluster answers again");
                    seen.unreachable = false;
                }
                view_changes(&mut seen, &view);
            }
            Err(e) if !seen.unreachable => {
                say(&format!(
                    "no answer from the cluster: {}",
                    leitstand_proto::error_chain(&e)
                ));
                seen.unreachable = true;
            }
            Err(_) => {}
        }
        journal(&mut seen, site);
        if let Ok(entries) = client.audit(seen.audit_next, AUDIT_BATCH).await {
            for entry in entries {
                seen.audit_next = seen.audit_next.max(entry.index + 1);
                say(&format!(
                    "audit #{} {} by {}: {}",
                    entry.index,
                    entry.kind,
                    entry.actor,
                    summary(&entry.body_json)
                ));
            }
        }
    }
}

fn view_changes(seen: &mut Seen, view: &View) {
    for service in &view.services {
        for path in &service.paths {
            let key = (service.name.clone(), path.name.clone());
            let before = seen.paths.insert(key, path.state);
            if before.is_some_and(|b| b != path.state) || before.is_none() {
                let was = before.map_or("new", state_word);
                say(&format!(
                    "path {}/{}: {was} → {}",
                    service.name,
                    path.name,
                    state_word(path.state)
                ));
            }
        }
        let before = seen
            .active
            .insert(service.name.clone(), service.active_path.clone());
        if before.as_ref() != Some(&service.active_path) {
            say(&format!(
                "service {} runs on {}{}",
                service.name,
                service.active_path,
                before.map_or_else(String::new, |b| format!(" (was {b})"))
            ));
        }
    }
    for decision in &view.decisions {
        let before = seen
            .decisions
            .insert(decision.decision_id.clone(), decision.stage);
        if before == Some(decision.stage) {
            continue;
        }
        let token = decision
            .fencing_token
            .map_or_else(String::new, |(term, index)| {
                format!(", fencing token {term}.{index}")
            });
        say(&format!(
            "decision {} {}: {} → {} {} ({} mode{token})",
            decision.decision_id,
            decision.service,
            decision.from_path,
            decision.to_path,
            stage_word(decision.stage),
            decision.mode.as_str()
        ));
    }
}

/// New lines of the executor's journal: "activate-lte d-… 3.17".
fn journal(seen: &mut Seen, site: &Site) {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(site.path("journal")) else {
        return;
    };
    let mut text = String::new();
    if file.take(MAX_JOURNAL).read_to_string(&mut text).is_err() {
        return;
    }
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().skip(seen.journal_lines) {
        let mut words = line.split_whitespace();
        let (action, decision, token) = (
            words.next().unwrap_or("?"),
            words.next().unwrap_or("?"),
            words.next().unwrap_or("?"),
        );
        say(&format!(
            "executor ran {action} with fencing token {token} (decision {decision})"
        ));
    }
    seen.journal_lines = seen.journal_lines.max(lines.len());
}

/// An audit entry's body in one short line.
fn summary(body_json: &str) -> String {
    let short: String = body_json.chars().take(160).collect();
    if short.len() < body_json.len() {
        format!("{short}…")
    } else {
        short
    }
}
