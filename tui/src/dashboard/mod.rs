//! The operator dashboard (`leitstand dashboard`).
//!
//! gitui's shape: background work — the terminal reader (a thread), the
//! Watch stream, the periodic ClusterStatus, the clock and any operator
//! action (tasks) — sends [`Event`]s into one channel. The main loop waits
//! only on that channel, lets [`App`] update its state, starts the network
//! [`Command`]s the app asks for as tasks of their own, and draws. The UI
//! never awaits the network, so a controller that does not answer cannot
//! freeze the screen; while the stream is down the last view stays and
//! the status line says how old it is.
//!
//! Accessibility (DESIGN.md §1): every state is a word and a symbol,
//! colour only repeats them; NO_COLOR is the caller's [`Theme`] choice;
//! `--theme high-contrast`; every text in English and German ([`Lang`]).

mod app;
mod event;
mod i18n;
mod theme;
mod view_model;
mod views;

pub mod fixture;
#[cfg(test)]
mod tests;

use std::io::stdout;
use std::sync::Arc;

use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;

pub use app::{App, Options, Tab};
pub use event::{Action, Command, Event, NetEvent, SandboxRequest};
pub use i18n::Lang;
pub use theme::{Theme, ThemeName};
pub use views::draw;

use crate::client::OperatorClient;

/// Events waiting for the main loop, at most; sources wait when it is full.
const QUEUE: usize = 1024;

/// Runs the dashboard in this terminal until the operator quits.
pub async fn run(client: Arc<OperatorClient>, options: Options) -> std::io::Result<()> {
    run_with(client, App::new(options), None, std::future::pending()).await
}

/// The dashboard of `leitstand dev`: as [`run`], plus the keys `b` and `h`,
/// which send [`SandboxRequest`]s (break, repair the primary path) to the
/// sandbox; it also closes when `stop` completes (the sandbox got SIGTERM).
pub async fn run_sandbox(
    client: Arc<OperatorClient>,
    options: Options,
    sandbox: mpsc::Sender<SandboxRequest>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut app = App::new(options);
    app.sandbox_keys = true;
    run_with(client, app, Some(sandbox), stop).await
}

async fn run_with(
    client: Arc<OperatorClient>,
    app: App,
    sandbox: Option<mpsc::Sender<SandboxRequest>>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    // ratatui's hook leaves raw mode and the alternate screen; ours also
    // stops mouse reporting, then hands over to it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(stdout(), DisableMouseCapture);
        previous(info);
    }));
    let result = match execute!(stdout(), EnableMouseCapture) {
        Ok(()) => {
            tokio::select! {
                result = main_loop(&mut terminal, &client, app, sandbox.as_ref()) => result,
                () = stop => Ok(()),
            }
        }
        Err(e) => Err(e),
    };
    let _ = execute!(stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

async fn main_loop(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Arc<OperatorClient>,
    mut app: App,
    sandbox: Option<&mpsc::Sender<SandboxRequest>>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    event::spawn_input(tx.clone())?;
    event::spawn_background(client, &tx);
    terminal.draw(|frame| draw(&app, frame, now_unix_ms()))?;
    while let Some(first) = rx.recv().await {
        // Everything already queued is applied before one draw: a burst of
        // deltas costs one frame.
        let mut next = Some(first);
        while let Some(event) = next {
            match app.event(event, now_unix_ms()) {
                None => {}
                // The sandbox shows what it did by what happens next.
                Some(Command::Sandbox(request)) => {
                    if let Some(sandbox) = sandbox {
                        let _ = sandbox.try_send(request);
                    }
                }
                Some(command) => event::spawn_command(client, &tx, command),
            }
            if app.should_quit() {
                return Ok(());
            }
            next = rx.try_recv().ok();
        }
        terminal.draw(|frame| draw(&app, frame, now_unix_ms()))?;
    }
    Ok(())
}

/// Our wall clock in Unix milliseconds (ages on screen are against it).
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
