//! Running the real binary: processes killed on drop, their standard error
//! collected line by line, and bounded waits for lines.

#![allow(dead_code, unreachable_pub)]
// These helpers drive other processes from a blocking test thread: no
// runtime, so tokio's Instant (there for paused-time tests) has no use here.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pause between two polls of a bounded wait; the waits themselves
/// have deadlines and say what they waited for.
#[allow(clippy::disallowed_methods)]
pub fn pause_between_polls() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Polls `condition` until it holds; fails naming what it waited for.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        pause_between_polls();
    }
}

pub fn leitstand() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leitstand"));
    command.env("LEITSTAND_LOG", "info").env("NO_COLOR", "1");
    command
}

/// Runs `leitstand args…` to completion (bounded to 60 s).
pub fn run(args: &[&str]) -> Output {
    let mut child = leitstand()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leitstand");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leitstand {args:?} did not finish within 60 s"
        );
        pause_between_polls();
    }
    child.wait_with_output().expect("output")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A long-running `leitstand` process.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Process {
    pub fn start(name: &str, args: &[&str]) -> Process {
        Process::start_with_log(name, args, "info")
    }

    /// Starts with `LEITSTAND_LOG` set to `filter`.
    pub fn start_with_log(name: &str, args: &[&str], filter: &str) -> Process {
        let mut child = leitstand()
            .env("LEITSTAND_LOG", filter)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leitstand");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Process {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    /// The `name=value` numbers of every line containing `needle`, in order.
    pub fn values(&self, needle: &str, name: &str) -> Vec<u64> {
        self.lines()
            .iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| field(l, name))
            .collect()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// Waits until at least `n` lines contain every one of `needles`.
    pub fn must_log_n(&self, n: usize, needles: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(needles) < n {
            if Instant::now() >= deadline {
                panic!(
                    "{} did not log {n} line(s) with {needles:?} within {timeout:?}; it logged:\n{}",
                    self.name,
                    self.lines.lock().expect("lines").join("\n")
                );
            }
            pause_between_polls();
        }
    }

    pub fn must_log(&self, needles: &[&str]) {
        self.must_log_n(1, needles, Duration::from_secs(20));
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("send signal");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 20 s of SIGTERM",
                self.name
            );
            pause_between_polls();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PKI made with the real `leitstand pki` commands.
pub fn pki(dir: &Path, trust_domain: &str) {
    let dir = dir.to_str().expect("utf-8 path");
    must_succeed(&["pki", "init", "--dir", dir, "--trust-domain", trust_domain]);
}

/// A PKI for a site, made with the real `leitstand pki` commands in
/// `dir`: controller certificates for 127.0.0.1 and agent certificates.
pub fn site_pki(dir: &Path, controllers: &[&str], agents: &[&str]) {
    pki(dir, "stadt.example");
    let d = dir.to_str().expect("utf-8 path");
    for id in controllers {
        must_succeed(&[
            "pki",
            "issue",
            "--dir",
            d,
            "--kind",
            "controller",
            "--name",
            id,
            "--ip",
            "127.0.0.1",
        ]);
    }
    for agent in agents {
        must_succeed(&[
            "pki", "issue", "--dir", d, "--kind", "agent", "--name", agent,
        ]);
    }
}

/// The value of `name=value` in a log line.
pub fn field<T: std::str::FromStr>(line: &str, name: &str) -> Option<T> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

pub fn must_succeed(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "leitstand {args:?} failed with {:?}:\n{}",
        out.status,
        text(&out.stderr)
    );
    out
}

/// A free port on loopback (bound and released; the race is harmless here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}
