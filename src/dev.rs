//! `leitstand dev`: the sandbox a newcomer starts with one command. Three
//! controllers and one agent in this process, a demo service whose two
//! paths (a "fiber" uplink and an "LTE" backup) are two TCP endpoints the
//! sandbox owns, fresh certificates in a temporary folder, and the
//! dashboard (or, `--headless`, the events as lines). Breaking a path
//! closes its endpoint: `b`/`h` in the dashboard, or `leitstand dev break
//! primary` / `repair primary` from another terminal through a control
//! socket only this user can open. Ctrl-C or SIGTERM removes everything.

mod control;
mod events;
mod site;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use leitstand_agent::LogFormat;
use leitstand_tui::dashboard::{Lang, Options, SandboxRequest, Theme, ThemeName};
use tokio::sync::mpsc;

use self::site::Site;

#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// Print events as lines instead of opening the dashboard.
    #[arg(long)]
    headless: bool,
    /// Language of the dashboard.
    #[arg(long, value_enum, default_value_t = DevLang::En)]
    lang: DevLang,
    #[command(subcommand)]
    command: Option<DevCommand>,
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Break a path of the running sandbox: its endpoint stops listening.
    Break { path: PathName },
    /// Repair a path of the running sandbox: its endpoint listens again.
    Repair { path: PathName },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DevLang {
    En,
    De,
}

/// The demo service's paths by role: primary is the fiber, backup the LTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PathName {
    Primary,
    Backup,
}

impl PathName {
    fn as_str(self) -> &'static str {
        match self {
            PathName::Primary => "primary",
            PathName::Backup => "backup",
        }
    }
}

/// What a key or the control socket asks of the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) repair: bool,
    pub(crate) path: PathName,
}

impl Request {
    /// The control socket's line: "break primary", "repair backup".
    fn to_line(self) -> String {
        let verb = if self.repair { "repair" } else { "break" };
        format!("{verb} {}", self.path.as_str())
    }

    fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_whitespace();
        let repair = match words.next()? {
            "break" => false,
            "repair" => true,
            _ => return None,
        };
        let path = match words.next()? {
            "primary" => PathName::Primary,
            "backup" => PathName::Backup,
            _ => return None,
        };
        words.next().is_none().then_some(Request { repair, path })
    }
}

impl From<SandboxRequest> for Request {
    fn from(request: SandboxRequest) -> Self {
        Request {
            repair: request == SandboxRequest::RepairPrimary,
            path: PathName::Primary,
        }
    }
}

pub(crate) async fn run(args: DevArgs, log_format: LogFormat) -> ExitCode {
    if let Some(command) = args.command {
        leitstand_agent::init_logging(log_format);
        let request = match command {
            DevCommand::Break { path } => Request {
                repair: false,
                path,
            },
            DevCommand::Repair { path } => Request { repair: true, path },
        };
        return control::send(request).await;
    }
    let dashboard = !args.headless;
    if dashboard && (!std::io::stdout().is_terminal() || !std::io::stdin().is_terminal()) {
        leitstand_agent::init_logging(log_format);
        tracing::error!(
            "leitstand dev opens the dashboard and needs a terminal; use `leitstand dev --headless` for plain lines"
        );
        return ExitCode::from(2);
    }
    let lang = match args.lang {
        DevLang::En => Lang::En,
        DevLang::De => Lang::De,
    };
    match sandbox(dashboard, lang, log_format).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The dashboard's logs went into the folder that is gone now.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("leitstand dev: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs: with the dashboard into `sandbox.log` in the folder (they would
/// tear the screen), else to standard error, quieter than a controller's
/// by default so the events stand out (`LEITSTAND_LOG` overrides).
fn init_logs(format: LogFormat, file: Option<std::fs::File>) {
    let default = if file.is_some() { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEITSTAND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = file.is_none()
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match (file, format) {
        (Some(file), LogFormat::Text) => {
            builder.with_writer(std::sync::Mutex::new(file)).try_init()
        }
        (Some(file), LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).try_init(),
        (None, LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

#[allow(clippy::print_stdout)]
async fn sandbox(dashboard: bool, lang: Lang, log_format: LogFormat) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    // First the control socket: a second sandbox stops here, before it
    // has made anything.
    let mut control = control::ControlSocket::bind()?;
    let root = site::make_root()?;
    let log_file = if dashboard {
        Some(std::fs::File::create(root.path().join("sandbox.log"))?)
    } else {
        None
    };
    init_logs(log_format, log_file);
    println!(
        "Leitstand dev sandbox: 3 controllers, 1 agent and the service {} with two paths",
        site::SERVICE
    );
    println!(
        "  folder (certificates, configuration, data): {}",
        root.path().display()
    );

    let stop = wait_for_stop();
    tokio::pin!(stop);
    let site = tokio::select! {
        site = Site::start(root) => site?,
        result = &mut stop => {
            result?;
            println!("stopped before the sandbox was ready; everything is removed");
            return Ok(());
        }
    };
    let site = Arc::new(site);
    println!("  operator.toml: {}", site.operator_toml().display());
    let ready = tokio::select! {
        result = site.until_ready(started) => result,
        result = &mut stop => {
            result?;
            println!("stopped before the sandbox was ready");
            return finish(site).await;
        }
    };
    if let Err(e) = ready {
        let _ = finish(site).await;
        return Err(e);
    }
    println!(
        "ready in {:.1} s: runbook applied, both paths healthy, {} runs on fiber",
        started.elapsed().as_secs_f64(),
        site::SERVICE
    );
    println!(
        "  break the primary path: `leitstand dev break primary` (repair: `leitstand dev repair primary`){}",
        if dashboard {
            ", or the keys b and h in the dashboard"
        } else {
            ""
        }
    );
    println!(
        "  the audit log: `leitstand audit export --format md --config {}`",
        site.operator_toml().display()
    );
    println!("  Ctrl-C stops everything and removes the folder");

    let served = {
        let site = Arc::clone(&site);
        control.serve(move |request| {
            let site = Arc::clone(&site);
            async move { site.apply(request).await }
        })
    };

    let result = if dashboard {
        let (keys, mut requests) = mpsc::channel::<SandboxRequest>(8);
        let from_keys = {
            let site = Arc::clone(&site);
            tokio::spawn(async move {
                while let Some(request) = requests.recv().await {
                    match site.apply(request.into()).await {
                        Ok(done) => tracing::info!("{done}"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
            })
        };
        let options = Options {
            lang,
            theme: Theme::new(
                ThemeName::Default,
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            ),
            controllers: site.controllers(),
        };
        let closed = async {
            let _ = (&mut stop).await;
        };
        let shown = leitstand_tui::dashboard::run_sandbox(site.client(), options, keys, closed)
            .await
            .map_err(|e| anyhow::anyhow!("the dashboard stopped: {e}"));
        from_keys.abort();
        shown
    } else {
        tokio::select! {
            () = events::print(&site) => Ok(()),
            result = &mut stop => result,
        }
    };
    served.abort();
    drop(control);
    println!("stopping the sandbox");
    let finished = finish(site).await;
    result.and(finished)
}

/// Stops the agent and the controllers, then removes the folder.
#[allow(clippy::print_stdout)]
async fn finish(site: Arc<Site>) -> anyhow::Result<()> {
    let folder = site.shutdown().await?;
    println!("removed {}", folder.display());
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{PathName, Request};

    #[test]
    fn control_lines_round_trip_and_nothing_else_parses() {
        for repair in [false, true] {
            for path in [PathName::Primary, PathName::Backup] {
                let request = Request { repair, path };
                assert_eq!(Request::parse(&request.to_line()), Some(request));
            }
        }
        for line in [
            "",
            "break",
            "break fiber",
            "repair primary now",
            "BREAK primary",
        ] {
            assert_eq!(Request::parse(line), None, "{line:?}");
        }
    }
}
