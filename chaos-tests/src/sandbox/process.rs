//! One process of the sandbox or a benchmark (a controller, an agent, etcd):
//! started from argv with no shell and its output appended to a log, and the faults a drill
//! gives it: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, SIGHUP, restart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

/// How long a SIGTERM'd process may take to drain before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    pub(crate) log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Process {
    pub(crate) fn new(
        name: impl Into<String>,
        program: &Path,
        args: Vec<OsString>,
        log: PathBuf,
    ) -> Process {
        Process {
            name: name.into(),
            program: program.to_owned(),
            args,
            env: vec![
                ("LEITSTAND_LOG".into(), "info".into()),
                ("NO_COLOR".into(), "1".into()),
                ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ],
            log,
            child: None,
            stopped: false,
        }
    }

    /// An extra environment variable for every later start.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        // Nothing from the caller's environment may change what runs.
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// SIGKILL, and hands the process over to be reaped by a caller that
    /// times something from the signal (`bench raft`'s elections).
    pub(crate) fn start_kill(&mut self) -> anyhow::Result<Child> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        child
            .start_kill()
            .with_context(|| format!("SIGKILL {}", self.name))?;
        self.stopped = false;
        Ok(child)
    }

    /// Started by us and not killed by us since (it may have exited).
    pub(crate) fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// How the process ended, if it has.
    pub(crate) fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match &mut self.child {
            None => Ok(None),
            Some(child) => child
                .try_wait()
                .with_context(|| format!("wait for {}", self.name)),
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// True while the process lives (also while it is stopped).
    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// SIGKILL, and waits until it is reaped.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .with_context(|| format!("kill {}", self.name))?;
        }
        self.stopped = false;
        Ok(())
    }

    /// SIGTERM, waits for it to drain and exit (SIGKILL after a grace period).
    pub(crate) async fn terminate(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            self.signal(Signal::SIGCONT)?;
        }
        if self.pid().is_none() {
            self.child = None;
            return Ok(());
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(child) = &mut self.child
            && tokio::time::timeout(TERM_GRACE, child.wait())
                .await
                .is_err()
        {
            tracing::warn!(process = %self.name, "did not exit within {TERM_GRACE:?} of SIGTERM; killing it");
        }
        self.kill().await
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub(crate) fn freeze(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    pub(crate) fn thaw(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    /// SIGHUP: controllers reload certificates and the CRL.
    pub(crate) fn hangup(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGHUP)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running ({signal})", self.name))?;
        let pid = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .with_context(|| format!("send {signal} to {} (pid {pid})", self.name))
    }

    /// Its last lines, for error messages.
    pub(crate) fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Where system programs (ip, tc, iptables, keepalived) are looked for
/// after PATH: sudo and systemd may leave the sbin directories out of it.
pub(crate) const SEARCH: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The first `name` on PATH or in [`SEARCH`] that is a file.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SEARCH.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The `leitstand` binary to run as controller and agent: `explicit`, or
/// the running one; it must be an executable file.
pub(crate) fn leitstand_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let binary = match explicit {
        Some(path) => path.to_owned(),
        None => std::env::current_exe().context("find the running leitstand binary")?,
    };
    let executable = std::fs::metadata(&binary)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        bail!(
            "{} is not an executable; build it first: cargo build --release -p leitstand",
            binary.display()
        );
    }
    Ok(binary)
}

/// The complete lines of a file others append to (a line is complete once
/// its newline is there); none when it does not exist yet.
pub(crate) fn complete_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    Ok(complete.lines().map(str::to_owned).collect())
}

/// Writes an executable script (0755).
pub(crate) fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}
