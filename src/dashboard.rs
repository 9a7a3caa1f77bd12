//! `leitstand dashboard`: options and the terminal check; the dashboard
//! itself lives in leitstand-tui.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use leitstand_proto::error_chain;
use leitstand_tui::dashboard::{Lang, Options, Theme, ThemeName};
use leitstand_tui::{OperatorClient, OperatorConfig};

#[derive(Args, Debug)]
pub(crate) struct DashboardArgs {
    /// The operator configuration (operator.toml).
    #[arg(long)]
    config: PathBuf,
    /// Language of the dashboard.
    #[arg(long, value_enum, default_value_t = LangArg::En)]
    lang: LangArg,
    /// Colours (none at all when NO_COLOR is set).
    #[arg(long, value_enum, default_value_t = ThemeArg::Default)]
    theme: ThemeArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LangArg {
    En,
    De,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ThemeArg {
    Default,
    HighContrast,
}

/// NO_COLOR (no-color.org): set and not empty means no colour at all.
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub(crate) async fn run(args: DashboardArgs) -> ExitCode {
    let config = match OperatorConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return failed(&e),
    };
    let client = match OperatorClient::new(&config) {
        Ok(client) => Arc::new(client),
        Err(e) => return failed(&e),
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        tracing::error!(
            "leitstand dashboard needs a terminal; for plain text use `leitstand status --config {}` (add --json for scripts)",
            args.config.display()
        );
        return ExitCode::from(2);
    }
    let options = Options {
        lang: match args.lang {
            LangArg::En => Lang::En,
            LangArg::De => Lang::De,
        },
        theme: Theme::new(
            match args.theme {
                ThemeArg::Default => ThemeName::Default,
                ThemeArg::HighContrast => ThemeName::HighContrast,
            },
            colour_allowed(),
        ),
        controllers: config.controllers.clone(),
    };
    match leitstand_tui::dashboard::run(client, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("the dashboard stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

fn failed(e: &leitstand_tui::Error) -> ExitCode {
    tracing::error!("{}", error_chain(e));
    ExitCode::from(e.exit_code())
}
