//! `kind = "exec"`: a Nagios plugin, run as the Monitoring Plugins API
//! expects, so Debian's monitoring-plugins run unchanged.
//!
//! - No shell: `argv[0]` (an absolute path) is executed with `argv[1..]`.
//! - Environment cleared except `PATH` (a fixed safe value) and
//!   `LC_ALL=C` (plugins then print numbers with a decimal point); stdin is
//!   /dev/null.
//! - stdout is kept up to [`MAX_STDOUT_BYTES`], stderr up to
//!   [`MAX_STDERR_BYTES`] (used only when stdout is empty); the rest is
//!   read and discarded, so a chatty plugin never blocks on a full pipe.
//! - Exit 0/1/2/3 is OK/WARNING/CRITICAL/UNKNOWN; another exit code or
//!   death by a signal is UNKNOWN with the reason; a plugin that cannot be
//!   started (missing, not executable) is UNKNOWN.
//! - The plugin runs in its own process group. At the timeout the whole
//!   group is killed (SIGKILL), the plugin reaped, and the result is
//!   CRITICAL "timed out after …; killed" — Nagios core's default timeout
//!   state, so that a path whose probe hangs can fail. The group is also
//!   killed after a normal exit (leftover background processes) and when
//!   the run is dropped (the runner stopped).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use leitstand_proto::v1::CheckStatus;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::perfdata::parse_plugin_output;
use super::{Outcome, format_duration};

/// PATH of a plugin: the environment is cleared first.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub(crate) const MAX_STDOUT_BYTES: usize = 8 << 10;
const MAX_STDERR_BYTES: usize = 1 << 10;
/// How long to wait for a killed plugin to be reaped. SIGKILL cannot be
/// caught, so this only guards against a process stuck in the kernel.
const REAP_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct ExecProbe {
    /// Non-empty; `argv[0]` is an absolute path.
    pub(crate) argv: Vec<String>,
}

impl ExecProbe {
    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// Runs the plugin; returns within `timeout` plus at most
    /// [`REAP_GRACE`].
    pub(super) async fn run(&self, timeout: Duration) -> Outcome {
        let mut command = tokio::process::Command::new(self.program());
        command
            .args(self.argv.iter().skip(1))
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::unknown(format!("cannot run {}: {e}", self.program())),
        };
        // With process_group(0) the group id is the child's pid.
        let mut group = ProcessGroup(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout(timeout, async {
            tokio::join!(
                read_capped(stdout, MAX_STDOUT_BYTES),
                read_capped(stderr, MAX_STDERR_BYTES),
                child.wait(),
            )
        })
        .await;
        match finished {
            Ok((stdout, stderr, status)) => {
                // The plugin is reaped; whatever it left running in its
                // group (a background child that closed its output) dies
                // now, so checks that run every few seconds cannot pile
                // up processes. The group id cannot have been reused: the
                // kernel keeps a pid while a group of that id has members.
                group.kill();
                self.judge(status, &stdout, &stderr)
            }
            Err(_) => {
                group.kill();
                if tokio::time::timeout(REAP_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        program = self.program(),
                        "a killed check plugin was not reaped in time"
                    );
                }
                Outcome::critical(format!(
                    "timed out after {}; killed",
                    format_duration(timeout)
                ))
            }
        }
    }

    fn judge(&self, status: io::Result<ExitStatus>, stdout: &[u8], stderr: &[u8]) -> Outcome {
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Outcome::unknown(format!("cannot wait for {}: {e}", self.program()));
            }
        };
        let (mut summary, perf) = parse_plugin_output(&String::from_utf8_lossy(stdout));
        if summary.is_empty() {
            let stderr = String::from_utf8_lossy(stderr);
            summary = stderr.lines().next().unwrap_or("").trim().to_owned();
        }
        if summary.is_empty() {
            summary = "(no output)".to_owned();
        }
        let outcome = match (status.code(), status.signal()) {
            (Some(0), _) => Outcome::new(CheckStatus::Ok, summary),
            (Some(1), _) => Outcome::new(CheckStatus::Warning, summary),
            (Some(2), _) => Outcome::new(CheckStatus::Critical, summary),
            (Some(3), _) => Outcome::new(CheckStatus::Unknown, summary),
            (Some(code), _) => Outcome::unknown(format!(
                "exit code {code} is not a plugin state (0–3): {summary}"
            )),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal).map_or("unknown signal", Signal::as_str);
                Outcome::unknown(format!("killed by signal {signal} ({name}): {summary}"))
            }
            (None, None) => Outcome::unknown(format!("ended without an exit code: {summary}")),
        };
        outcome.with_perf(perf)
    }
}

/// Everything `pipe` yields, of which the first `cap` bytes are kept; the
/// rest is drained so the child never blocks on a full pipe.
pub(crate) async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// The process group of a running plugin, killed at the end of every run
/// and when dropped: a check (finished, timed out, or dropped because the
/// runner stopped) leaves no process behind, not even one its plugin
/// started in the background.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(group) = self.0.take() {
            // ESRCH (the group is already gone) is fine.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use leitstand_proto::v1::CheckStatus;
    use tokio::time::Instant;

    use super::super::test_support::*;
    use super::super::{CheckSpec, run_once};

    const PLUGINS: &str = "/usr/lib/nagios/plugins";

    /// A plugin of Debian's monitoring-plugins-basic; fails (does not skip)
    /// when it is missing.
    fn must_have_plugin(name: &str) -> String {
        let path = Path::new(PLUGINS).join(name);
        assert!(
            path.is_file(),
            "{} is missing: install the Debian package monitoring-plugins-basic \
             (apt-get install monitoring-plugins-basic) to run the exec check tests",
            path.display()
        );
        path.display().to_string()
    }

    fn exec_check(argv: &[&str], extra: &str) -> CheckSpec {
        let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        must_parse_one(&format!(
            "name = \"plugin\"\nkind = \"exec\"\nargv = [{}]\n{extra}",
            argv.join(", ")
        ))
    }

    /// A shell script in `dir`, run as `/bin/sh script args…` (no exec of
    /// a freshly written file, which can fail with ETXTBSY in a threaded
    /// test process).
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        path
    }

    #[tokio::test]
    async fn check_dummy_states() {
        let dummy = must_have_plugin("check_dummy");
        let cases = [
            ("0", CheckStatus::Ok, "OK: all good"),
            ("1", CheckStatus::Warning, "WARNING: all good"),
            ("2", CheckStatus::Critical, "CRITICAL: all good"),
            ("3", CheckStatus::Unknown, "UNKNOWN: all good"),
        ];
        for (code, status, summary) in cases {
            let result = run_once(&exec_check(&[&dummy, code, "all good"], "")).await;
            must_have_status(&result, status);
            assert_eq!(result.summary, summary, "check_dummy {code}");
        }
    }

    #[tokio::test]
    async fn check_tcp_against_a_local_listener() {
        let check_tcp = must_have_plugin("check_tcp");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port().to_string();
        // Accept (and close) what check_tcp opens, as a real service would.
        let acceptor = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let result = run_once(&exec_check(
            &[&check_tcp, "-H", "127.0.0.1", "-p", &port],
            "",
        ))
        .await;
        must_have_status(&result, CheckStatus::Ok);
        assert!(
            result.summary.starts_with("TCP OK - ")
                && result.summary.contains(&format!("port {port}")),
            "{}",
            result.summary
        );
        let time = result
            .perf
            .iter()
            .find(|p| p.label == "time")
            .expect("time perf datum");
        assert_eq!(time.unit, "s");
        assert_eq!(time.max, Some(10.0));
        acceptor.abort();

        // Nothing listening any more: check_tcp says CRITICAL.
        let free = free_port().await.to_string();
        let result = run_once(&exec_check(
            &[&check_tcp, "-H", "127.0.0.1", "-p", &free],
            "",
        ))
        .await;
        must_have_status(&result, CheckStatus::Critical);
        assert!(
            result.summary.contains("Connection refused"),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn plugins_that_cannot_run_are_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-plugin");
        let result = run_once(&exec_check(&[missing.to_str().expect("utf-8")], "")).await;
        must_have_status(&result, CheckStatus::Unknown);
        assert_eq!(
            result.summary,
            format!(
                "cannot run {}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        let not_executable = script(dir.path(), "plain", "exit 0");
        let result = run_once(&exec_check(&[not_executable.to_str().expect("utf-8")], "")).await;
        must_have_status(&result, CheckStatus::Unknown);
        assert!(
            result.summary.ends_with("Permission denied (os error 13)"),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn odd_endings_are_unknown_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "echo 'weird|x=1'; exit 7",
                "exit code 7 is not a plugin state (0–3): weird",
            ),
            (
                "echo dying; kill -TERM $$",
                "killed by signal 15 (SIGTERM): dying",
            ),
            (
                "exit 255",
                "exit code 255 is not a plugin state (0–3): (no output)",
            ),
        ];
        for (i, (body, summary)) in cases.into_iter().enumerate() {
            let path = script(dir.path(), &format!("odd{i}"), body);
            let result =
                run_once(&exec_check(&["/bin/sh", path.to_str().expect("utf-8")], "")).await;
            must_have_status(&result, CheckStatus::Unknown);
            assert_eq!(result.summary, summary, "{body}");
        }
    }

    #[tokio::test]
    async fn environment_output_and_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |body: &str, status: CheckStatus, summary: &str| {
            let path = script(dir.path(), &format!("s{}", fastrand::u64(..)), body);
            let spec = exec_check(&["/bin/sh", path.to_str().expect("utf-8")], "");
            let (body, summary) = (body.to_owned(), summary.to_owned());
            async move {
                let result = run_once(&spec).await;
                must_have_status(&result, status);
                assert_eq!(result.summary, summary, "{body}");
                result
            }
        };
        // Only PATH and LC_ALL survive (the shell itself adds PWD).
        check(
            "echo \"PATH=$PATH LC_ALL=$LC_ALL HOME=${HOME:-unset} USER=${USER:-unset}\"",
            CheckStatus::Ok,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=unset USER=unset",
        )
        .await;
        check(
            "read line && echo \"got $line\" || echo 'stdin is empty'",
            CheckStatus::Ok,
            "stdin is empty",
        )
        .await;
        // stderr is the summary only when stdout says nothing.
        check(
            "echo 'broken pipe' >&2; exit 2",
            CheckStatus::Critical,
            "broken pipe",
        )
        .await;
        check(
            "echo 'said this'; echo 'not this' >&2; exit 1",
            CheckStatus::Warning,
            "said this",
        )
        .await;
        // Megabytes of output: read to the end, the summary cut to 1024 bytes.
        let result = check(
            "head -c 3000000 /dev/zero | tr '\\000' a; echo; echo second",
            CheckStatus::Ok,
            &"a".repeat(1024),
        )
        .await;
        assert!(result.perf.is_empty());
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_killed_with_its_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("background.pid");
        let hang = script(
            dir.path(),
            "hang",
            "sleep 300 &\necho $! > \"$1\"\nsleep 300",
        );
        let spec = exec_check(
            &[
                "/bin/sh",
                hang.to_str().expect("utf-8"),
                pid_file.to_str().expect("utf-8"),
            ],
            "timeout = \"300ms\"\n",
        );
        let started = Instant::now();
        let result = run_once(&spec).await;
        let took = started.elapsed();
        must_have_status(&result, CheckStatus::Critical);
        assert_eq!(result.summary, "timed out after 300ms; killed");
        // The timeout, the kill and the reap; the rest is slack for a busy
        // machine.
        assert!(
            took < std::time::Duration::from_millis(1500),
            "took {took:?}"
        );

        let background: u32 = std::fs::read_to_string(&pid_file)
            .expect("the script wrote its background child's pid")
            .trim()
            .parse()
            .expect("a pid");
        must_end(background).await;
    }

    #[tokio::test]
    async fn background_leftovers_die_after_a_normal_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("background.pid");
        let leave = script(
            dir.path(),
            "leave",
            "sleep 300 >/dev/null 2>&1 &\necho $! > \"$1\"\necho 'OK - done'",
        );
        let spec = exec_check(
            &[
                "/bin/sh",
                leave.to_str().expect("utf-8"),
                pid_file.to_str().expect("utf-8"),
            ],
            "timeout = \"10s\"\n",
        );
        let result = run_once(&spec).await;
        must_have_status(&result, CheckStatus::Ok);
        assert_eq!(result.summary, "OK - done");
        let background: u32 = std::fs::read_to_string(&pid_file)
            .expect("the script wrote its background child's pid")
            .trim()
            .parse()
            .expect("a pid");
        must_end(background).await;
    }

    #[tokio::test]
    async fn dropping_a_run_kills_its_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        // Only killing the group ends the background sleep: kill_on_drop
        // alone would end just the shell.
        let hang = script(dir.path(), "hang", "sleep 300 &\necho $! > \"$1\"\nwait");
        let spec = exec_check(
            &[
                "/bin/sh",
                hang.to_str().expect("utf-8"),
                pid_file.to_str().expect("utf-8"),
            ],
            "timeout = \"60s\"\n",
        );
        let run = tokio::spawn(async move { run_once(&spec).await });
        wait_for("the plugin to write its background child's pid", || {
            std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        run.abort();
        assert!(run.await.expect_err("aborted").is_cancelled());
        must_end(pid).await;
    }
}
