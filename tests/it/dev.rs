//! `leitstand dev --headless` as a newcomer runs it: it comes up, `leitstand
//! dev break primary` from "another terminal" fails the service over (seen
//! in its lines and in `leitstand audit export`), `repair primary` brings
//! the failback, and SIGTERM removes its folder and control socket.

#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{leitstand, pause_between_polls, text};

/// `leitstand` with the sandbox's control socket in `runtime_dir`, so the
/// test never meets a sandbox the developer is running.
fn dev_command(runtime_dir: &Path) -> Command {
    let mut command = leitstand();
    command.env("XDG_RUNTIME_DIR", runtime_dir);
    command
}

/// Runs to completion, bounded to 60 s.
fn run_in(runtime_dir: &Path, args: &[&str]) -> Output {
    let mut child = dev_command(runtime_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leitstand");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "leitstand {args:?} did not finish within 60 s"
        );
        pause_between_polls();
    }
    child.wait_with_output().expect("output")
}

/// The running sandbox with its standard output and error line by line.
struct Sandbox {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

impl Sandbox {
    fn start(runtime_dir: &Path) -> Sandbox {
        let mut child = dev_command(runtime_dir)
            .args(["dev", "--headless"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leitstand dev");
        let out = collect(child.stdout.take().expect("stdout"));
        let err = collect(child.stderr.take().expect("stderr"));
        Sandbox { child, out, err }
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().expect("lines").clone()
    }

    /// Waits for a line containing every one of `needles`; returns it.
    fn must_print(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            if Instant::now() >= deadline {
                let logged = self.err.lock().expect("lines").join("\n");
                panic!(
                    "leitstand dev did not print {needles:?} within {timeout:?}; it printed:\n{}\n\nand logged:\n{logged}",
                    self.lines().join("\n"),
                );
            }
            pause_between_polls();
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "leitstand dev did not stop within 20 s of SIGTERM"
            );
            pause_between_polls();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn must_succeed_in(runtime_dir: &Path, args: &[&str]) -> String {
    let out = run_in(runtime_dir, args);
    assert!(
        out.status.success(),
        "leitstand {args:?} failed with {:?}:\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_sandbox_fails_over_when_the_primary_breaks_and_fails_back_after_repair() {
    let runtime = tempfile::tempdir().expect("a runtime dir");
    let runtime_dir = runtime.path();

    // Nothing runs yet: a clear sentence, exit 1.
    let out = run_in(runtime_dir, &["dev", "break", "primary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no leitstand dev sandbox is running"),
        "{}",
        text(&out.stderr)
    );

    let mut sandbox = Sandbox::start(runtime_dir);
    sandbox.must_print(&["ready in"], Duration::from_secs(60));
    let operator_toml = PathBuf::from(
        sandbox
            .must_print(&["operator.toml:"], Duration::from_secs(1))
            .split_once("operator.toml:")
            .expect("the path")
            .1
            .trim(),
    );
    let folder = operator_toml.parent().expect("the folder").to_owned();
    assert!(operator_toml.is_file(), "{}", operator_toml.display());
    let socket = runtime_dir.join("leitstand-dev").join("control.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700, "the folder is this user's alone");
        assert_eq!(mode(&socket), 0o600, "so is the control socket");
    }

    // A second sandbox refuses to start beside the first.
    let second = run_in(runtime_dir, &["dev", "--headless"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("already running"),
        "{}",
        text(&second.stderr)
    );

    // Break the primary: detection, decision, execution, verification.
    let said = must_succeed_in(runtime_dir, &["dev", "break", "primary"]);
    assert!(said.contains("broke the primary path (fiber"), "{said}");
    sandbox.must_print(
        &["path leitstelle-uplink/fiber: healthy → failed"],
        Duration::from_secs(20),
    );
    let ran = sandbox.must_print(
        &["executor ran activate-lte with fencing token"],
        Duration::from_secs(20),
    );
    sandbox.must_print(
        &["service leitstelle-uplink runs on lte (was fiber)"],
        Duration::from_secs(20),
    );
    sandbox.must_print(
        &["decision", "fiber → lte verified"],
        Duration::from_secs(20),
    );
    sandbox.must_print(&["audit #", "decision.verified"], Duration::from_secs(20));

    // The same in the audit log, exported as a newcomer would.
    let config = operator_toml.to_str().expect("utf-8");
    let export = must_succeed_in(
        runtime_dir,
        &["audit", "export", "--format", "jsonl", "--config", config],
    );
    let token = ran
        .split("fencing token ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the token");
    assert!(
        export
            .lines()
            .any(|l| l.contains("\"kind\":\"decision.proposed\"") && l.contains("activate-lte")),
        "{export}"
    );
    assert!(
        export
            .lines()
            .any(|l| l.contains("\"kind\":\"decision.result\"") && l.contains(token)),
        "the executor's result under fencing token {token}: {export}"
    );

    // Repair: the fiber recovers and, after failback.after, is active again.
    let said = must_succeed_in(runtime_dir, &["dev", "repair", "primary"]);
    assert!(said.contains("repaired the primary path"), "{said}");
    sandbox.must_print(
        &["path leitstelle-uplink/fiber: failed → healthy"],
        Duration::from_secs(20),
    );
    sandbox.must_print(&["executor ran activate-fiber"], Duration::from_secs(40));
    sandbox.must_print(
        &["service leitstelle-uplink runs on fiber (was lte)"],
        Duration::from_secs(20),
    );
    let out = run_in(runtime_dir, &["dev", "break", "sideways"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");

    // SIGTERM removes everything it made.
    let status = sandbox.stop();
    assert!(status.success(), "{status:?}");
    assert!(!folder.exists(), "{} is removed", folder.display());
    assert!(!socket.exists(), "the control socket is removed");
    let out = run_in(runtime_dir, &["dev", "repair", "primary"]);
    assert_eq!(out.status.code(), Some(1));
}
