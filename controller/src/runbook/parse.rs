//! Runbook TOML → [`Runbook`], with file, line and column on every mistake.
//!
//! Two steps. The TOML is deserialized into `Raw*` structs that keep the
//! span of every value (`toml::Spanned`) and refuse unknown keys; a syntax
//! or schema error stops there, with its location. Then the raw runbook is
//! validated as a whole and every mistake found is kept (up to
//! [`MAX_REPORTED_MISTAKES`]), so one `leitstand runbook check` shows what
//! to fix, not only the first thing. Required keys are optional in the raw
//! structs so that a missing one gets a sentence saying what to write,
//! located at its table.
//!
//! The defaults and bounds are documented in docs/runbook-reference.md;
//! change both together.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use leitstand_proto::config::{ConfigSource, parse_duration};
use leitstand_proto::domain::{AgentId, Identifier};
use toml::Spanned;

use super::{
    Activate, Failback, FlapGuard, MAX_PATHS, MAX_RUNBOOK_BYTES, MAX_SERVICES, MAX_VANTAGE, Mode,
    Path, Runbook, Service, Silence, Vantage,
};

/// Why a runbook is refused.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error(transparent)]
    Read(leitstand_proto::Error),
    /// Mistakes in the text, in the order of the text: each a
    /// `leitstand_proto::Error::Config` with file, line, column and what to
    /// do. `Display` shows `first`, then each of `more` on its own line.
    #[error("{first}{}", more_lines(.more))]
    Invalid {
        first: leitstand_proto::Error,
        more: Vec<leitstand_proto::Error>,
    },
}

impl RunbookError {
    /// Every located mistake (none for [`RunbookError::Read`]).
    pub fn mistakes(&self) -> impl Iterator<Item = &leitstand_proto::Error> {
        let (first, more) = match self {
            RunbookError::Read(_) => (None, &[][..]),
            RunbookError::Invalid { first, more } => (Some(first), &more[..]),
        };
        first.into_iter().chain(more)
    }
}

fn more_lines(more: &[leitstand_proto::Error]) -> String {
    more.iter().map(|e| format!("\n{e}")).collect()
}

/// Mistakes kept at most; a runbook with more gets a last line saying so.
pub(super) const MAX_REPORTED_MISTAKES: usize = 20;

/// `failback` when absent: only an operator goes back to a preferred path.
pub(super) const DEFAULT_FAILBACK: Failback = Failback::Manual;
/// `flap_guard` when absent (each key on its own, too).
pub(super) const DEFAULT_FLAP_GUARD: FlapGuard = FlapGuard {
    min_interval: Duration::from_secs(60),
    max_per_hour: 3,
};
/// `quorum` when absent; only allowed with a single vantage point.
pub(super) const DEFAULT_QUORUM: u32 = 1;
pub(super) const DEFAULT_FAIL_AFTER: u32 = 3;
pub(super) const DEFAULT_RECOVER_AFTER: u32 = 5;
/// Three reports at the agent's default interval of 1 s.
pub(super) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3);
pub(super) const DEFAULT_SILENCE: Silence = Silence::Unknown;

/// `fail_after` and `recover_after`: consecutive results.
pub(super) const THRESHOLD_RANGE: std::ops::RangeInclusive<i64> = 1..=100;
pub(super) const MIN_STALE_AFTER: Duration = Duration::from_millis(100);
pub(super) const MAX_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);
pub(super) const MIN_FAILBACK_AFTER: Duration = Duration::from_secs(1);
pub(super) const MAX_FAILBACK_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
pub(super) const MAX_MIN_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub(super) const MAX_PER_HOUR_RANGE: std::ops::RangeInclusive<i64> = 1..=60;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    #[serde(default, rename = "service")]
    services: Vec<Spanned<RawService>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    /// "manual" or { after = "10m" }: two shapes, read by hand.
    #[serde(default)]
    failback: Option<Spanned<toml::Value>>,
    #[serde(default)]
    flap_guard: Option<RawFlapGuard>,
    #[serde(default, rename = "path")]
    paths: Vec<Spanned<RawPath>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlapGuard {
    #[serde(default)]
    min_interval: Option<Spanned<String>>,
    #[serde(default)]
    max_per_hour: Option<Spanned<i64>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    vantage: Option<Spanned<Vec<Spanned<RawCheckRef>>>>,
    #[serde(default)]
    quorum: Option<Spanned<i64>>,
    #[serde(default)]
    fail_after: Option<Spanned<i64>>,
    #[serde(default)]
    recover_after: Option<Spanned<i64>>,
    #[serde(default)]
    stale_after: Option<Spanned<String>>,
    #[serde(default)]
    silence_means: Option<Spanned<String>>,
    #[serde(default)]
    activate: Option<Spanned<RawActivate>>,
    #[serde(default)]
    verify: Option<Spanned<RawCheckRef>>,
}

/// `{ agent, check }`: a vantage point or the verify check.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckRef {
    #[serde(default)]
    agent: Option<Spanned<String>>,
    #[serde(default)]
    check: Option<Spanned<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivate {
    #[serde(default)]
    agent: Option<Spanned<String>>,
    #[serde(default)]
    action: Option<Spanned<String>>,
}

impl Runbook {
    /// Parses and validates `text`; `source` names it in errors.
    pub fn parse(source: &FsPath, text: &str) -> Result<Runbook, RunbookError> {
        let config = ConfigSource::from_text(source, text.to_owned());
        if text.len() > MAX_RUNBOOK_BYTES {
            return Err(RunbookError::Invalid {
                first: config.error_at(
                    0..0,
                    format!(
                        "the runbook has {} bytes; a runbook is at most {MAX_RUNBOOK_BYTES} bytes (1 MiB)",
                        text.len()
                    ),
                ),
                more: Vec::new(),
            });
        }
        let raw: RawRunbook = config.parse().map_err(|e| RunbookError::Invalid {
            first: with_hint(e),
            more: Vec::new(),
        })?;
        let mut check = Checker {
            source: &config,
            mistakes: Vec::new(),
        };
        let runbook = check.runbook(raw);
        check.mistakes.sort_by_key(|(offset, _)| *offset);
        let mut mistakes = check.mistakes.into_iter().map(|(_, e)| e);
        match (runbook, mistakes.next()) {
            (Some(runbook), None) => Ok(runbook),
            (_, Some(first)) => Err(RunbookError::Invalid {
                first,
                more: mistakes.collect(),
            }),
            (None, None) => Err(RunbookError::Invalid {
                first: config.error_at(0..0, "the runbook is not valid (no mistake was recorded: a bug in Leitstand, please report it)"),
                more: Vec::new(),
            }),
        }
    }

    /// Reads and parses a runbook file; the runbook and its text.
    pub fn load(path: &FsPath) -> Result<(Runbook, String), RunbookError> {
        let read_error = |source| {
            RunbookError::Read(leitstand_proto::Error::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_RUNBOOK_BYTES as u64 {
            return Err(RunbookError::Invalid {
                first: leitstand_proto::Error::Config {
                    path: PathBuf::from(path),
                    line: 1,
                    column: 1,
                    message: format!(
                        "the file has {len} bytes; a runbook is at most {MAX_RUNBOOK_BYTES} bytes (1 MiB)"
                    ),
                },
                more: Vec::new(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        let runbook = Runbook::parse(path, &text)?;
        Ok((runbook, text))
    }
}

/// The TOML library's message, and what to do about the usual slips.
fn with_hint(error: leitstand_proto::Error) -> leitstand_proto::Error {
    let leitstand_proto::Error::Config {
        path,
        line,
        column,
        message,
    } = error
    else {
        return error;
    };
    let hint = if message.contains("expected a sequence") {
        "; write [[service]] and [[service.path]] with two brackets (each is one of a list), and vantage = [{ agent = \"…\", check = \"…\" }] as a list"
    } else if message.contains("unknown field") {
        "; check the spelling, and see docs/runbook-reference.md for the keys"
    } else {
        ""
    };
    leitstand_proto::Error::Config {
        path,
        line,
        column,
        message: format!("{message}{hint}"),
    }
}

/// Validation that records every mistake and goes on where it can.
struct Checker<'a> {
    source: &'a ConfigSource,
    /// (byte offset, located mistake), sorted by offset at the end.
    mistakes: Vec<(usize, leitstand_proto::Error)>,
}

impl Checker<'_> {
    fn mistake(&mut self, span: Range<usize>, message: impl Into<String>) {
        let offset = span.start;
        if self.mistakes.len() < MAX_REPORTED_MISTAKES {
            self.mistakes
                .push((offset, self.source.error_at(span, message)));
        } else if self.mistakes.len() == MAX_REPORTED_MISTAKES {
            self.mistakes.push((
                usize::MAX,
                self.source.error_at(
                    span,
                    format!("more than {MAX_REPORTED_MISTAKES} mistakes; fix these first (this is where the next one is)"),
                ),
            ));
        }
    }

    fn runbook(&mut self, raw: RawRunbook) -> Option<Runbook> {
        if raw.services.is_empty() {
            self.mistake(
                0..0,
                "the runbook declares no services; declare each with [[service]] (applying an empty runbook would stop watching every service, so it is refused)",
            );
            return None;
        }
        if let Some(extra) = raw.services.get(MAX_SERVICES) {
            self.mistake(
                extra.span(),
                format!(
                    "the runbook declares {} services; at most {MAX_SERVICES} are allowed",
                    raw.services.len()
                ),
            );
            return None;
        }
        let mut names: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let mut services = Vec::with_capacity(raw.services.len());
        let mut complete = true;
        for raw_service in &raw.services {
            if let Some(name) = &raw_service.get_ref().name {
                if let Some(first) = names.get(name.get_ref()) {
                    let at = self.position(first.start);
                    self.mistake(
                        name.span(),
                        format!(
                            "service {:?} is declared twice (first at {at}); service names must be unique",
                            name.get_ref()
                        ),
                    );
                } else {
                    names.insert(name.get_ref().clone(), name.span());
                }
            }
            match self.service(raw_service) {
                Some(service) => services.push(service),
                None => complete = false,
            }
        }
        complete.then_some(Runbook { services })
    }

    /// "line L, column C" of a byte offset, to point at an earlier value.
    fn position(&self, offset: usize) -> String {
        match self.source.error_at(offset..offset, "") {
            leitstand_proto::Error::Config { line, column, .. } => {
                format!("line {line}, column {column}")
            }
            _ => format!("byte {offset}"),
        }
    }

    fn service(&mut self, raw: &Spanned<RawService>) -> Option<Service> {
        let table = raw.span();
        let raw = raw.get_ref();
        let name = match &raw.name {
            Some(name) => self.identifier(name, "service name"),
            None => {
                self.mistake(
                    table.clone(),
                    "this [[service]] has no name; add name = \"…\" (letters, digits, '.', '_', '-')",
                );
                None
            }
        };
        let label = match &raw.name {
            Some(name) => format!("service {}", name.get_ref()),
            None => "service".to_owned(),
        };
        let mode = match &raw.mode {
            Some(mode) => match mode.get_ref().as_str() {
                "auto" => Some(Mode::Auto),
                "approve" => Some(Mode::Approve),
                "dry-run" => Some(Mode::DryRun),
                other => {
                    self.mistake(
                        mode.span(),
                        format!(
                            "{label}: mode = {other:?} is not a mode; write \"auto\" (the controller switches), \"approve\" (a person confirms each switch) or \"dry-run\" (switches are only recorded)"
                        ),
                    );
                    None
                }
            },
            None => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{label}: mode is missing; write mode = \"auto\", \"approve\" or \"dry-run\" (there is no default: who may switch this service is a decision to write down)"
                    ),
                );
                None
            }
        };
        let failback = match &raw.failback {
            Some(failback) => self.failback(failback, &label),
            None => Some(DEFAULT_FAILBACK),
        };
        let flap_guard = match &raw.flap_guard {
            Some(guard) => self.flap_guard(guard, &label),
            None => Some(DEFAULT_FLAP_GUARD),
        };
        let paths = self.paths(table, &raw.paths, &label);
        Some(Service {
            name: name?,
            mode: mode?,
            failback: failback?,
            flap_guard: flap_guard?,
            paths: paths?,
        })
    }

    fn failback(&mut self, raw: &Spanned<toml::Value>, label: &str) -> Option<Failback> {
        let shape = format!(
            "{label}: failback must be \"manual\" or {{ after = \"10m\" }} (back to a preferred path once it was healthy that long)"
        );
        match raw.get_ref() {
            toml::Value::String(word) if word == "manual" => Some(Failback::Manual),
            toml::Value::Table(table) => {
                let mut keys = table.keys().filter(|k| k.as_str() != "after");
                if let Some(unknown) = keys.next() {
                    self.mistake(
                        raw.span(),
                        format!("{shape}; {unknown:?} is not a key of failback"),
                    );
                    return None;
                }
                match table.get("after") {
                    Some(toml::Value::String(after)) => {
                        let after = Spanned::new(raw.span(), after.clone());
                        self.duration(
                            &after,
                            MIN_FAILBACK_AFTER,
                            MAX_FAILBACK_AFTER,
                            &format!("{label}: failback.after"),
                        )
                        .map(Failback::After)
                    }
                    _ => {
                        self.mistake(raw.span(), shape);
                        None
                    }
                }
            }
            _ => {
                self.mistake(raw.span(), shape);
                None
            }
        }
    }

    fn flap_guard(&mut self, raw: &RawFlapGuard, label: &str) -> Option<FlapGuard> {
        let min_interval = match &raw.min_interval {
            Some(d) => self.duration(
                d,
                Duration::ZERO,
                MAX_MIN_INTERVAL,
                &format!("{label}: flap_guard.min_interval"),
            ),
            None => Some(DEFAULT_FLAP_GUARD.min_interval),
        };
        let max_per_hour = match &raw.max_per_hour {
            Some(n) => self.count(
                n,
                MAX_PER_HOUR_RANGE,
                &format!("{label}: flap_guard.max_per_hour"),
                "automatic switches within an hour before the service freezes",
            ),
            None => Some(DEFAULT_FLAP_GUARD.max_per_hour),
        };
        Some(FlapGuard {
            min_interval: min_interval?,
            max_per_hour: max_per_hour?,
        })
    }

    fn paths(
        &mut self,
        table: Range<usize>,
        raw: &[Spanned<RawPath>],
        label: &str,
    ) -> Option<Vec<Path>> {
        if raw.len() < 2 {
            self.mistake(
                table,
                format!(
                    "{label} has {} path(s); a service needs at least 2 to fail over between: add [[service.path]] tables in priority order",
                    raw.len()
                ),
            );
            return None;
        }
        if let Some(extra) = raw.get(MAX_PATHS) {
            self.mistake(
                extra.span(),
                format!(
                    "{label} has {} paths; at most {MAX_PATHS} are allowed",
                    raw.len()
                ),
            );
            return None;
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut actions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut paths = Vec::with_capacity(raw.len());
        let mut complete = true;
        for raw_path in raw {
            let path = raw_path.get_ref();
            if let Some(name) = &path.name {
                if let Some(&first) = names.get(name.get_ref().as_str()) {
                    let at = self.position(first);
                    self.mistake(
                        name.span(),
                        format!(
                            "{label}: path {:?} is declared twice (first at {at}); path names must be unique within a service",
                            name.get_ref()
                        ),
                    );
                } else {
                    names.insert(name.get_ref(), name.span().start);
                }
            }
            if let Some(activate) = &path.activate
                && let (Some(agent), Some(action)) =
                    (&activate.get_ref().agent, &activate.get_ref().action)
            {
                let key = (agent.get_ref().as_str(), action.get_ref().as_str());
                if let Some(&first) = actions.get(&key) {
                    let at = self.position(first);
                    self.mistake(
                        activate.span(),
                        format!(
                            "{label}: action {} on agent {} already activates the path at {at}; each path needs its own action, or the controller cannot tell which path it switched to",
                            key.1, key.0
                        ),
                    );
                } else {
                    actions.insert(key, activate.span().start);
                }
            }
            match self.path(raw_path, label) {
                Some(path) => paths.push(path),
                None => complete = false,
            }
        }
        complete.then_some(paths)
    }

    fn path(&mut self, raw: &Spanned<RawPath>, service: &str) -> Option<Path> {
        let table = raw.span();
        let raw = raw.get_ref();
        let name = match &raw.name {
            Some(name) => self.identifier(name, &format!("{service}: path name")),
            None => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{service}: this [[service.path]] has no name; add name = \"…\" (e.g. \"fiber\", \"lte\", \"standby-site\")"
                    ),
                );
                None
            }
        };
        let label = match &raw.name {
            Some(name) => format!("{service}, path {}", name.get_ref()),
            None => format!("{service}, path"),
        };
        let vantage = self.vantage(table.clone(), raw.vantage.as_ref(), &label);
        let quorum = match (&raw.quorum, &vantage) {
            (Some(quorum), Some(vantage)) => {
                let n = i64::try_from(vantage.len()).unwrap_or(i64::MAX);
                self.count(
                    quorum,
                    1..=n,
                    &format!("{label}: quorum"),
                    &quorum_meaning(vantage.len()),
                )
            }
            (Some(quorum), None) => self.count(
                quorum,
                1..=i64::try_from(MAX_VANTAGE).unwrap_or(i64::MAX),
                &format!("{label}: quorum"),
                "vantage points that must agree",
            ),
            (None, Some(vantage)) if vantage.len() > 1 => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{label}: quorum is missing; with {} vantage points say how many must agree: {}",
                        vantage.len(),
                        quorum_meaning(vantage.len())
                    ),
                );
                None
            }
            (None, _) => Some(DEFAULT_QUORUM),
        };
        let fail_after = match &raw.fail_after {
            Some(n) => self.count(
                n,
                THRESHOLD_RANGE,
                &format!("{label}: fail_after"),
                "consecutive critical results before a vantage point is failing",
            ),
            None => Some(DEFAULT_FAIL_AFTER),
        };
        let recover_after = match &raw.recover_after {
            Some(n) => self.count(
                n,
                THRESHOLD_RANGE,
                &format!("{label}: recover_after"),
                "consecutive ok results before a vantage point is passing",
            ),
            None => Some(DEFAULT_RECOVER_AFTER),
        };
        let stale_after = match &raw.stale_after {
            Some(d) => self.duration(
                d,
                MIN_STALE_AFTER,
                MAX_STALE_AFTER,
                &format!("{label}: stale_after"),
            ),
            None => Some(DEFAULT_STALE_AFTER),
        };
        let silence_means = match &raw.silence_means {
            Some(word) => match word.get_ref().as_str() {
                "unknown" => Some(Silence::Unknown),
                "failed" => Some(Silence::Failed),
                other => {
                    self.mistake(
                        word.span(),
                        format!(
                            "{label}: silence_means = {other:?}; write \"unknown\" (missing data is not failure) or \"failed\" (for an agent whose only route is this very path)"
                        ),
                    );
                    None
                }
            },
            None => Some(DEFAULT_SILENCE),
        };
        let activate = match &raw.activate {
            Some(activate) => self.activate(activate, &label),
            None => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{label}: activate is missing; write activate = {{ agent = \"…\", action = \"…\" }}: the agent that runs the action and the action's name in that agent's [[action]] list"
                    ),
                );
                None
            }
        };
        let verify = match &raw.verify {
            Some(verify) => self
                .check_ref(verify.span(), verify.get_ref(), &format!("{label}: verify"))
                .map(Some),
            None => Some(None),
        };
        Some(Path {
            name: name?,
            vantage: vantage?,
            quorum: quorum?,
            fail_after: fail_after?,
            recover_after: recover_after?,
            stale_after: stale_after?,
            silence_means: silence_means?,
            activate: activate?,
            verify: verify?,
        })
    }

    fn vantage(
        &mut self,
        table: Range<usize>,
        raw: Option<&Spanned<Vec<Spanned<RawCheckRef>>>>,
        label: &str,
    ) -> Option<Vec<Vantage>> {
        let Some(raw) = raw else {
            self.mistake(
                table,
                format!(
                    "{label}: vantage is missing; write vantage = [{{ agent = \"…\", check = \"…\" }}]: where this path is checked, and by which check"
                ),
            );
            return None;
        };
        let list = raw.get_ref();
        if list.is_empty() || list.len() > MAX_VANTAGE {
            self.mistake(
                raw.span(),
                format!(
                    "{label}: vantage lists {} points; list 1 to {MAX_VANTAGE}",
                    list.len()
                ),
            );
            return None;
        }
        let mut seen: BTreeMap<Vantage, usize> = BTreeMap::new();
        let mut points = Vec::with_capacity(list.len());
        let mut complete = true;
        for point in list {
            let Some(vantage) = self.check_ref(point.span(), point.get_ref(), label) else {
                complete = false;
                continue;
            };
            if let Some(&first) = seen.get(&vantage) {
                let at = self.position(first);
                self.mistake(
                    point.span(),
                    format!(
                        "{label}: check {} on agent {} is listed twice (first at {at}); each vantage point counts once",
                        vantage.check, vantage.agent
                    ),
                );
                complete = false;
                continue;
            }
            seen.insert(vantage.clone(), point.span().start);
            points.push(vantage);
        }
        complete.then_some(points)
    }

    fn check_ref(
        &mut self,
        table: Range<usize>,
        raw: &RawCheckRef,
        label: &str,
    ) -> Option<Vantage> {
        let agent = match &raw.agent {
            Some(agent) => self.agent(agent, label),
            None => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{label}: agent is missing; write {{ agent = \"…\", check = \"…\" }} with the agent's id (the name in its certificate)"
                    ),
                );
                None
            }
        };
        let check = match &raw.check {
            Some(check) => self.identifier(check, &format!("{label}: check")),
            None => {
                self.mistake(
                    table,
                    format!(
                        "{label}: check is missing; write {{ agent = \"…\", check = \"…\" }} with a [[check]] name from that agent's configuration"
                    ),
                );
                None
            }
        };
        Some(Vantage {
            agent: agent?,
            check: check?,
        })
    }

    fn activate(&mut self, raw: &Spanned<RawActivate>, label: &str) -> Option<Activate> {
        let table = raw.span();
        let raw = raw.get_ref();
        let agent = match &raw.agent {
            Some(agent) => self.agent(agent, &format!("{label}: activate")),
            None => {
                self.mistake(
                    table.clone(),
                    format!(
                        "{label}: activate has no agent; write activate = {{ agent = \"…\", action = \"…\" }}"
                    ),
                );
                None
            }
        };
        let action = match &raw.action {
            Some(action) => self.identifier(action, &format!("{label}: activate action")),
            None => {
                self.mistake(
                    table,
                    format!(
                        "{label}: activate has no action; write activate = {{ agent = \"…\", action = \"…\" }} with an [[action]] name from that agent's configuration"
                    ),
                );
                None
            }
        };
        Some(Activate {
            agent: agent?,
            action: action?,
        })
    }

    fn identifier(&mut self, value: &Spanned<String>, what: &str) -> Option<Identifier> {
        match Identifier::new(value.get_ref()) {
            Ok(id) => Some(id),
            Err(e) => {
                self.mistake(
                    value.span(),
                    format!("{what} {:?}: {}", value.get_ref(), e.reason),
                );
                None
            }
        }
    }

    fn agent(&mut self, value: &Spanned<String>, label: &str) -> Option<AgentId> {
        match AgentId::new(value.get_ref()) {
            Ok(id) => Some(id),
            Err(e) => {
                self.mistake(
                    value.span(),
                    format!(
                        "{label}: agent {:?} is not an agent id (the name in its certificate): {}",
                        value.get_ref(),
                        e.reason
                    ),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        value: &Spanned<String>,
        min: Duration,
        max: Duration,
        what: &str,
    ) -> Option<Duration> {
        match parse_duration(self.source, value, min, max) {
            Ok(d) => Some(d),
            Err(leitstand_proto::Error::Config { message, .. }) => {
                self.mistake(value.span(), format!("{what} = {message}"));
                None
            }
            Err(other) => {
                self.mistake(value.span(), format!("{what}: {other}"));
                None
            }
        }
    }

    fn count(
        &mut self,
        value: &Spanned<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
        meaning: &str,
    ) -> Option<u32> {
        let n = *value.get_ref();
        match u32::try_from(n) {
            Ok(ok) if range.contains(&n) => Some(ok),
            _ => {
                self.mistake(
                    value.span(),
                    format!(
                        "{what} = {n} is out of range; allowed is {} to {} ({meaning})",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }
}

fn quorum_meaning(vantage: usize) -> String {
    if vantage <= 1 {
        return "1 (the one vantage point decides)".to_owned();
    }
    format!(
        "1 (any one decides) to {vantage} (all must agree); a majority is {}",
        vantage / 2 + 1
    )
}
