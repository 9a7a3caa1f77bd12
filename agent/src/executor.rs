//! The action executor: runs only actions named in the local allowlist,
//! never code from the network, and never out of fencing order.
//!
//! For each ExecuteAction, in this order:
//! 1. a decision id with a stored result gets that result back, marked
//!    `replayed`, without running anything;
//! 2. a decision id that was started but has no result (the agent died
//!    while it ran) gets FAILED "outcome unknown", again without running:
//!    a decision runs at most once on this agent (invariant I3);
//! 3. an action not in the allowlist, a passed deadline, or a fencing token
//!    lower than the highest this agent executed for the service is REFUSED;
//! 4. the token is persisted (write, fsync, rename, fsync directory), then a
//!    "started" marker, and only then does the action run;
//! 5. the result is persisted, then returned.
//!
//! Requests for one service are handled one at a time, so two decisions
//! cannot race between the token check and the token write.
//!
//! Files under `state_dir`: `fencing/<service>.json` (highest token) and
//! `decisions/<decision id>.json` (started marker, then the result). The
//! names are validated identifiers, so they cannot leave these directories.
//!
//! Test-only: built with the cargo feature `chaos-break-fencing` (never in
//! a build that ships), `LEITSTAND_CHAOS_BREAK_FENCING=1` skips the token
//! comparison of step 3, so that the chaos checker can show it catches a
//! violation of I2. Without the feature that code does not exist.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::checks::read_capped;
use leitstand_proto::domain::{FencingToken, Identifier, bounds};
use leitstand_proto::v1;

/// PATH for actions: the environment is cleared first.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One `[[action]]` of agent.toml, validated.
#[derive(Debug, Clone)]
pub(crate) struct ActionSpec {
    pub(crate) name: Identifier,
    /// argv[0] is an absolute path; no shell is ever involved.
    pub(crate) argv: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) working_dir: PathBuf,
    pub(crate) timeout: Duration,
    /// Bytes of output kept, at most `bounds::MAX_ACTION_OUTPUT_BYTES`.
    pub(crate) output_cap: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StoredToken {
    term: u64,
    index: u64,
}

impl From<FencingToken> for StoredToken {
    fn from(t: FencingToken) -> Self {
        StoredToken {
            term: t.term,
            index: t.index,
        }
    }
}

impl From<StoredToken> for FencingToken {
    fn from(t: StoredToken) -> Self {
        FencingToken {
            term: t.term,
            index: t.index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredOutcome {
    Started,
    Succeeded,
    Failed,
    TimedOut,
}

/// What `decisions/<id>.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredDecision {
    service: String,
    action: String,
    token: StoredToken,
    outcome: StoredOutcome,
    exit_code: Option<i32>,
    output: String,
    reason: String,
    duration_ms: u64,
}

/// Why the executor's state cannot be used: every action of the affected
/// service is refused until an operator looks.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read or write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid executor state ({detail}); inspect it, it is never overwritten", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

pub(crate) struct Executor {
    actions: HashMap<Identifier, ActionSpec>,
    fencing_dir: PathBuf,
    decisions_dir: PathBuf,
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Fencing switched off on purpose (see [`chaos`]).
    #[cfg(feature = "chaos-break-fencing")]
    fencing_broken: bool,
}

/// The chaos checker's self-test switch: with the feature
/// `chaos-break-fencing` compiled in, `LEITSTAND_CHAOS_BREAK_FENCING=1`
/// makes the executor run lower fencing tokens (it still records them).
#[cfg(feature = "chaos-break-fencing")]
mod chaos {
    pub(super) const VARIABLE: &str = "LEITSTAND_CHAOS_BREAK_FENCING";

    /// Whether the variable's value switches fencing off: exactly `1`.
    pub(super) fn fencing_broken(value: Option<&std::ffi::OsStr>) -> bool {
        value.is_some_and(|v| v == "1")
    }

    /// Reads the variable, and says so loudly when it switches fencing off.
    pub(super) fn from_env() -> bool {
        let broken = fencing_broken(std::env::var_os(VARIABLE).as_deref());
        if broken {
            tracing::error!(
                variable = VARIABLE,
                "FENCING IS DISABLED: this test build runs actions with stale fencing tokens \
                 (invariant I2 is broken on purpose); never run it in production"
            );
        }
        broken
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .field("fencing_dir", &self.fencing_dir)
            .finish_non_exhaustive()
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    leitstand_proto::files::write_atomically(path, &bytes, 0o600).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A validated request.
struct Request {
    decision_id: Identifier,
    service: Identifier,
    action: Identifier,
    token: FencingToken,
    deadline_unix_ms: i64,
}

fn result_message(request: &v1::ExecuteAction) -> v1::ActionResult {
    v1::ActionResult {
        decision_id: request.decision_id.clone(),
        service: request.service.clone(),
        action: request.action.clone(),
        fencing_token: request.fencing_token,
        ..Default::default()
    }
}

fn refused(request: &v1::ExecuteAction, reason: String) -> v1::ActionResult {
    tracing::warn!(
        decision_id = %request.decision_id,
        service = %request.service,
        action = %request.action,
        "action refused: {reason}"
    );
    v1::ActionResult {
        outcome: v1::ActionOutcome::Refused as i32,
        reason: truncate(reason, bounds::MAX_REASON_BYTES),
        ..result_message(request)
    }
}

impl Executor {
    pub(crate) fn new(state_dir: &Path, actions: Vec<ActionSpec>) -> Result<Self, StateError> {
        let fencing_dir = state_dir.join("fencing");
        let decisions_dir = state_dir.join("decisions");
        leitstand_proto::files::create_private_dir(&fencing_dir).map_err(|source| {
            StateError::Io {
                path: fencing_dir.clone(),
                source,
            }
        })?;
        leitstand_proto::files::create_private_dir(&decisions_dir).map_err(|source| {
            StateError::Io {
                path: decisions_dir.clone(),
                source,
            }
        })?;
        Ok(Executor {
            actions: actions.into_iter().map(|a| (a.name.clone(), a)).collect(),
            fencing_dir,
            decisions_dir,
            service_locks: Mutex::new(HashMap::new()),
            #[cfg(feature = "chaos-break-fencing")]
            fencing_broken: chaos::from_env(),
        })
    }

    /// Whether a request with `token` is refused as stale after `highest`.
    fn is_stale(&self, token: FencingToken, highest: FencingToken) -> bool {
        #[cfg(feature = "chaos-break-fencing")]
        if self.fencing_broken {
            if token < highest {
                tracing::error!(%token, %highest, "FENCING IS DISABLED: running a stale fencing token");
            }
            return false;
        }
        token < highest
    }

    /// The allowlist, as announced to the controller.
    pub(crate) fn action_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.actions.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    fn validate(request: &v1::ExecuteAction) -> Result<Request, String> {
        let id = |field: &str, value: &str| {
            Identifier::new(value).map_err(|e| format!("{field}: {}", e.reason))
        };
        Ok(Request {
            decision_id: id("decision_id", &request.decision_id)?,
            service: id("service", &request.service)?,
            action: id("action", &request.action)?,
            token: FencingToken::try_from(request.fencing_token).map_err(|e| e.to_string())?,
            deadline_unix_ms: request.deadline_unix_ms,
        })
    }

    fn service_lock(&self, service: &Identifier) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .service_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(service.to_string()).or_default().clone()
    }

    pub(crate) async fn execute(&self, message: v1::ExecuteAction) -> v1::ActionResult {
        let request = match Self::validate(&message) {
            Ok(request) => request,
            Err(reason) => return refused(&message, format!("invalid request: {reason}")),
        };
        let lock = self.service_lock(&request.service);
        let _one_at_a_time = lock.lock().await;
        match self.execute_locked(&message, &request).await {
            Ok(result) => result,
            Err(e) => refused(
                &message,
                format!(
                    "executor state unusable: {}",
                    leitstand_proto::error_chain(&e)
                ),
            ),
        }
    }

    async fn execute_locked(
        &self,
        message: &v1::ExecuteAction,
        request: &Request,
    ) -> Result<v1::ActionResult, StateError> {
        let decision_file = self
            .decisions_dir
            .join(format!("{}.json", request.decision_id));
        if let Some(stored) = read_json::<StoredDecision>(&decision_file)? {
            return Ok(self.replay(message, stored));
        }
        let Some(spec) = self.actions.get(&request.action) else {
            return Ok(refused(
                message,
                format!(
                    "action {:?} is not in this agent's allowlist",
                    request.action.as_str()
                ),
            ));
        };
        if request.deadline_unix_ms <= 0 || now_unix_ms() > request.deadline_unix_ms {
            return Ok(refused(
                message,
                "the decision's deadline has passed".into(),
            ));
        }
        let fencing_file = self.fencing_dir.join(format!("{}.json", request.service));
        if let Some(highest) = read_json::<StoredToken>(&fencing_file)?.map(FencingToken::from)
            && self.is_stale(request.token, highest)
        {
            return Ok(refused(
                message,
                format!(
                    "stale fencing token {} (this agent already executed {highest} for this service)",
                    request.token
                ),
            ));
        }
        write_json(&fencing_file, &StoredToken::from(request.token))?;
        let mut record = StoredDecision {
            service: request.service.to_string(),
            action: request.action.to_string(),
            token: request.token.into(),
            outcome: StoredOutcome::Started,
            exit_code: None,
            output: String::new(),
            reason: String::new(),
            duration_ms: 0,
        };
        write_json(&decision_file, &record)?;

        tracing::info!(
            decision_id = %request.decision_id,
            service = %request.service,
            action = %request.action,
            fencing_token = %request.token,
            "running action"
        );
        let outcome = run(spec, request).await;
        record.outcome = outcome.outcome;
        record.exit_code = outcome.exit_code;
        record.output = outcome.output;
        record.reason = outcome.reason;
        record.duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
        write_json(&decision_file, &record)?;
        tracing::info!(
            decision_id = %request.decision_id,
            outcome = ?record.outcome,
            exit_code = ?record.exit_code,
            duration_ms = record.duration_ms,
            "action finished"
        );
        Ok(to_message(message, &record, false))
    }

    fn replay(&self, message: &v1::ExecuteAction, stored: StoredDecision) -> v1::ActionResult {
        if stored.outcome == StoredOutcome::Started {
            tracing::warn!(
                decision_id = %message.decision_id,
                "decision was started before this agent restarted; not running it again"
            );
            let unknown = StoredDecision {
                outcome: StoredOutcome::Failed,
                reason: "the agent stopped while this action ran; its outcome is unknown and it is not run again"
                    .into(),
                ..stored
            };
            return to_message(message, &unknown, true);
        }
        tracing::info!(decision_id = %message.decision_id, "returning the stored result of an executed decision");
        to_message(message, &stored, true)
    }
}

fn to_message(
    message: &v1::ExecuteAction,
    stored: &StoredDecision,
    replayed: bool,
) -> v1::ActionResult {
    let outcome = match stored.outcome {
        StoredOutcome::Succeeded => v1::ActionOutcome::Succeeded,
        StoredOutcome::Failed | StoredOutcome::Started => v1::ActionOutcome::Failed,
        StoredOutcome::TimedOut => v1::ActionOutcome::TimedOut,
    };
    v1::ActionResult {
        fencing_token: Some(v1::FencingToken {
            term: stored.token.term,
            index: stored.token.index,
        }),
        outcome: outcome as i32,
        exit_code: stored.exit_code,
        output: truncate(stored.output.clone(), bounds::MAX_ACTION_OUTPUT_BYTES),
        reason: truncate(stored.reason.clone(), bounds::MAX_REASON_BYTES),
        duration_ms: stored.duration_ms,
        replayed,
        ..result_message(message)
    }
}

struct RunOutcome {
    outcome: StoredOutcome,
    exit_code: Option<i32>,
    output: String,
    reason: String,
    duration: Duration,
}

async fn run(spec: &ActionSpec, request: &Request) -> RunOutcome {
    use std::os::unix::process::ExitStatusExt;
    let started = tokio::time::Instant::now();
    let mut command = tokio::process::Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .envs(&spec.env)
        .env("LEITSTAND_DECISION_ID", request.decision_id.as_str())
        .env("LEITSTAND_SERVICE", request.service.as_str())
        .env("LEITSTAND_FENCING_TOKEN", request.token.to_string())
        .current_dir(&spec.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let failed = |reason: String| RunOutcome {
        outcome: StoredOutcome::Failed,
        exit_code: None,
        output: String::new(),
        reason,
        duration: started.elapsed(),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", spec.argv[0])),
    };
    let pid = child.id();
    let stdout = tokio::spawn(read_capped(child.stdout.take(), spec.output_cap));
    let stderr = tokio::spawn(read_capped(child.stderr.take(), spec.output_cap));
    let status = tokio::time::timeout(spec.timeout, child.wait()).await;
    let timed_out = status.is_err();
    if timed_out && let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The whole group: helpers the action started die with it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = match status {
        Ok(status) => status,
        Err(_) => child.wait().await,
    };
    let mut output = stdout.await.unwrap_or_default();
    let err = stderr.await.unwrap_or_default();
    if !err.is_empty() {
        if !output.is_empty() {
            output.push(b'\n');
        }
        output.extend_from_slice(&err);
    }
    let output = truncate(
        String::from_utf8_lossy(&output).into_owned(),
        spec.output_cap,
    );
    let duration = started.elapsed();
    match status {
        _ if timed_out => RunOutcome {
            outcome: StoredOutcome::TimedOut,
            exit_code: None,
            output,
            reason: format!(
                "timed out after {:?}; killed with its process group",
                spec.timeout
            ),
            duration,
        },
        Ok(status) if status.success() => RunOutcome {
            outcome: StoredOutcome::Succeeded,
            exit_code: Some(0),
            output,
            reason: String::new(),
            duration,
        },
        Ok(status) => RunOutcome {
            outcome: StoredOutcome::Failed,
            exit_code: status.code(),
            reason: match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "ended abnormally".into(),
            },
            output,
            duration,
        },
        Err(e) => failed(format!("cannot wait for the action: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, argv: &[&str]) -> ActionSpec {
        ActionSpec {
            name: Identifier::new(name).expect("name"),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_dir: PathBuf::from("/"),
            timeout: Duration::from_secs(10),
            output_cap: 4096,
        }
    }

    fn request(decision: &str, action: &str, term: u64, index: u64) -> v1::ExecuteAction {
        v1::ExecuteAction {
            decision_id: decision.into(),
            service: "dispatch-uplink".into(),
            action: action.into(),
            fencing_token: Some(v1::FencingToken { term, index }),
            deadline_unix_ms: now_unix_ms() + 60_000,
        }
    }

    /// An action that appends one line per run to `journal`, so tests can
    /// count how often it really ran.
    fn journaling(dir: &Path, name: &str) -> (ActionSpec, PathBuf) {
        let journal = dir.join(format!("{name}.journal"));
        let script = dir.join(format!("{name}.sh"));
        std::fs::write(&script, "#!/bin/sh\necho \"$LEITSTAND_DECISION_ID $LEITSTAND_FENCING_TOKEN\" >> \"$JOURNAL\"\necho switched\n")
            .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut spec = spec(name, &[script.to_str().expect("utf-8")]);
        spec.env
            .insert("JOURNAL".into(), journal.to_str().expect("utf-8").into());
        (spec, journal)
    }

    fn runs(journal: &Path) -> Vec<String> {
        std::fs::read_to_string(journal)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn outcome(result: &v1::ActionResult) -> v1::ActionOutcome {
        v1::ActionOutcome::try_from(result.outcome).expect("valid outcome")
    }

    #[tokio::test]
    async fn runs_an_allowlisted_action_once_and_replays_its_result() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (action, journal) = journaling(dir.path(), "activate-lte");
        let executor = Executor::new(&dir.path().join("state"), vec![action]).expect("executor");

        let first = executor
            .execute(request("d-1", "activate-lte", 3, 17))
            .await;
        assert_eq!(outcome(&first), v1::ActionOutcome::Succeeded, "{first:?}");
        assert_eq!(first.exit_code, Some(0));
        assert_eq!(first.output.trim(), "switched");
        assert!(!first.replayed);
        assert_eq!(runs(&journal), vec!["d-1 3.17"]);

        let again = executor
            .execute(request("d-1", "activate-lte", 3, 17))
            .await;
        assert!(
            again.replayed,
            "a re-delivered decision gets the stored result"
        );
        assert_eq!(outcome(&again), v1::ActionOutcome::Succeeded);
        assert_eq!(runs(&journal).len(), 1, "and does not run again");
    }

    #[tokio::test]
    async fn refuses_what_is_not_allowlisted_stale_or_late() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (action, journal) = journaling(dir.path(), "activate-lte");
        let executor = Executor::new(&dir.path().join("state"), vec![action]).expect("executor");
        assert_eq!(
            outcome(
                &executor
                    .execute(request("d-5", "activate-lte", 5, 50))
                    .await
            ),
            v1::ActionOutcome::Succeeded
        );

        let cases = [
            (
                request("d-x", "rm-rf", 6, 1),
                "not in this agent's allowlist",
            ),
            (
                request("d-old", "activate-lte", 5, 49),
                "stale fencing token 5.49",
            ),
            (
                request("d-older", "activate-lte", 4, 99),
                "stale fencing token 4.99",
            ),
            (
                v1::ExecuteAction {
                    deadline_unix_ms: now_unix_ms() - 1,
                    ..request("d-late", "activate-lte", 6, 1)
                },
                "deadline has passed",
            ),
            (
                request("../etc", "activate-lte", 6, 1),
                "invalid request: decision_id",
            ),
            (request("d-0", "activate-lte", 0, 1), "invalid request"),
        ];
        for (req, reason) in cases {
            let result = executor.execute(req.clone()).await;
            assert_eq!(outcome(&result), v1::ActionOutcome::Refused, "{req:?}");
            assert!(
                result.reason.contains(reason),
                "{:?} should say {reason:?}",
                result.reason
            );
        }
        assert_eq!(runs(&journal).len(), 1, "nothing refused ran");

        // Equal or higher tokens run.
        assert_eq!(
            outcome(
                &executor
                    .execute(request("d-6", "activate-lte", 5, 50))
                    .await
            ),
            v1::ActionOutcome::Succeeded
        );
        assert_eq!(
            outcome(&executor.execute(request("d-7", "activate-lte", 6, 1)).await),
            v1::ActionOutcome::Succeeded
        );
        assert_eq!(runs(&journal).len(), 3);
    }

    #[cfg(feature = "chaos-break-fencing")]
    #[tokio::test]
    async fn the_chaos_switch_runs_a_lower_token_and_still_records_it() {
        use std::ffi::OsStr;
        assert!(chaos::fencing_broken(Some(OsStr::new("1"))));
        for off in [None, Some(OsStr::new("0")), Some(OsStr::new("true"))] {
            assert!(!chaos::fencing_broken(off), "{off:?} leaves fencing on");
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let (action, journal) = journaling(dir.path(), "activate-lte");
        let state = dir.path().join("state");
        let mut executor = Executor::new(&state, vec![action]).expect("executor");
        // As LEITSTAND_CHAOS_BREAK_FENCING=1 would at start (tests do not
        // set the process environment: other tests run in parallel).
        executor.fencing_broken = true;
        for (decision, term, index) in [("d-5", 5, 50), ("d-old", 4, 99)] {
            let result = executor
                .execute(request(decision, "activate-lte", term, index))
                .await;
            assert_eq!(outcome(&result), v1::ActionOutcome::Succeeded, "{result:?}");
        }
        assert_eq!(
            runs(&journal),
            vec!["d-5 5.50", "d-old 4.99"],
            "the lower token ran after the higher one: I2 broken on purpose"
        );
        let recorded: StoredToken = read_json(&state.join("fencing/dispatch-uplink.json"))
            .expect("readable")
            .expect("recorded");
        assert_eq!(recorded, StoredToken { term: 4, index: 99 });
    }

    #[tokio::test]
    async fn the_token_survives_a_restart_and_a_started_decision_never_runs_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let (action, journal) = journaling(dir.path(), "activate-lte");
        {
            let executor = Executor::new(&state, vec![action.clone()]).expect("executor");
            executor
                .execute(request("d-10", "activate-lte", 7, 70))
                .await;
        }
        // A crash after the token and the started marker were written, before the run.
        write_json(
            &state.join("fencing/dispatch-uplink.json"),
            &StoredToken { term: 8, index: 80 },
        )
        .expect("token");
        let started = StoredDecision {
            service: "dispatch-uplink".into(),
            action: "activate-lte".into(),
            token: StoredToken { term: 8, index: 80 },
            outcome: StoredOutcome::Started,
            exit_code: None,
            output: String::new(),
            reason: String::new(),
            duration_ms: 0,
        };
        write_json(&state.join("decisions/d-11.json"), &started).expect("marker");

        let executor = Executor::new(&state, vec![action]).expect("executor after restart");
        let stale = executor
            .execute(request("d-12", "activate-lte", 7, 75))
            .await;
        assert_eq!(
            outcome(&stale),
            v1::ActionOutcome::Refused,
            "the persisted token still fences"
        );
        let interrupted = executor
            .execute(request("d-11", "activate-lte", 8, 80))
            .await;
        assert_eq!(outcome(&interrupted), v1::ActionOutcome::Failed);
        assert!(
            interrupted.replayed && interrupted.reason.contains("outcome is unknown"),
            "{interrupted:?}"
        );
        assert_eq!(
            runs(&journal),
            vec!["d-10 7.70"],
            "the interrupted decision was not run again"
        );
    }

    #[tokio::test]
    async fn corrupt_fencing_state_refuses_instead_of_guessing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let (action, journal) = journaling(dir.path(), "activate-lte");
        let executor = Executor::new(&state, vec![action]).expect("executor");
        std::fs::write(state.join("fencing/dispatch-uplink.json"), "{ torn").expect("corrupt");
        let result = executor.execute(request("d-1", "activate-lte", 9, 9)).await;
        assert_eq!(outcome(&result), v1::ActionOutcome::Refused);
        assert!(
            result.reason.contains("not valid executor state"),
            "{:?}",
            result.reason
        );
        assert!(runs(&journal).is_empty());
    }

    #[tokio::test]
    async fn failures_timeouts_and_missing_programs_are_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut slow = spec("slow", &["/bin/sleep", "30"]);
        slow.timeout = Duration::from_millis(200);
        let mut chatty = spec(
            "chatty",
            &["/bin/sh", "-c", "yes leitstand | head -c 100000; exit 3"],
        );
        chatty.output_cap = 64;
        let executor = Executor::new(
            &dir.path().join("state"),
            vec![
                slow,
                chatty,
                spec("missing", &["/nonexistent/leitstand-action"]),
            ],
        )
        .expect("executor");

        let started = tokio::time::Instant::now();
        let timed_out = executor.execute(request("d-1", "slow", 1, 1)).await;
        assert_eq!(
            outcome(&timed_out),
            v1::ActionOutcome::TimedOut,
            "{timed_out:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "killed at its timeout"
        );

        let failed = executor.execute(request("d-2", "chatty", 1, 2)).await;
        assert_eq!(outcome(&failed), v1::ActionOutcome::Failed);
        assert_eq!(failed.exit_code, Some(3));
        assert!(
            failed.output.len() <= 64,
            "output capped: {} bytes",
            failed.output.len()
        );

        let missing = executor.execute(request("d-3", "missing", 1, 3)).await;
        assert_eq!(outcome(&missing), v1::ActionOutcome::Failed);
        assert!(
            missing.reason.contains("cannot start"),
            "{:?}",
            missing.reason
        );
    }
}
