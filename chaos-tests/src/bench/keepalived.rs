//! The reference of `leitstand bench failover`: keepalived's VRRP between
//! two network namespaces joined by a veth pair, a MASTER (priority 150)
//! and a BACKUP (priority 100) sharing a virtual address; the BACKUP's
//! `notify_master` script reads the clock first, like our action. A trial
//! sends SIGKILL to the MASTER's process group (the keepalived parent and
//! its VRRP child at once: the node dies, nothing says goodbye), waits for
//! the BACKUP's notify_master, then restarts the MASTER, which preempts.
//!
//! Run with `advert_int 1` and `advert_int 0.1` (VRRP version 3, which
//! allows centiseconds). Needs root and Debian's keepalived; without them
//! the JSON says skipped and why. Everything it creates goes on Drop: the
//! process groups are killed, the namespaces deleted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::failover::{Machine, jitter, round3, summary, tail, unix_ns, write_script};
use crate::sandbox::process::find_program as find;

const MASTER_PRIORITY: u32 = 150;
const BACKUP_PRIORITY: u32 = 100;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(5);
const SUBNET: &str = "10.213.0";

/// The reference's JSON: figures, `skipped` with the reason, or `failed`.
pub(super) async fn run(dir: &Path, trials: u64) -> serde_json::Value {
    if let Some(reason) = unavailable() {
        tracing::warn!("keepalived reference skipped: {reason}");
        return serde_json::json!({ "skipped": reason });
    }
    match measure(dir, trials).await {
        Ok(figures) => figures,
        Err(e) => {
            tracing::error!("keepalived reference failed: {e:#}");
            serde_json::json!({ "failed": format!("{e:#}") })
        }
    }
}

fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("?");
    if effective_uid != "0" {
        return Some(format!(
            "network namespaces need root (effective uid {effective_uid})"
        ));
    }
    for program in ["keepalived", "ip", "kill"] {
        if find(program).is_none() {
            return Some(format!(
                "{program} not found; apt-get install keepalived iproute2 procps"
            ));
        }
    }
    None
}

#[derive(Debug, Clone)]
struct Programs {
    ip: PathBuf,
    keepalived: PathBuf,
    kill: PathBuf,
}

async fn measure(dir: &Path, trials: u64) -> anyhow::Result<serde_json::Value> {
    let programs = Programs {
        ip: find("ip").context("ip")?,
        keepalived: find("keepalived").context("keepalived")?,
        kill: find("kill").context("kill")?,
    };
    leitstand_proto::files::create_private_dir(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let version = version(&programs.keepalived).await;
    let before = Machine::take();
    let net = Namespaces::create(&programs.ip).await?;
    let mut runs = serde_json::Map::new();
    for (label, advert) in [("advert_1s", "1"), ("advert_100ms", "0.1")] {
        tracing::info!(advert, trials, "keepalived: measuring");
        let run_dir = dir.join(label);
        std::fs::create_dir(&run_dir).with_context(|| format!("create {}", run_dir.display()))?;
        let figures = match advert_run(&programs, &net, &run_dir, advert, trials).await {
            Ok(figures) => figures,
            Err(e) => {
                tracing::error!(advert, "keepalived run failed: {e:#}");
                serde_json::json!({ "failed": format!("{e:#}") })
            }
        };
        runs.insert(label.into(), figures);
    }
    net.delete().await;
    Ok(serde_json::json!({
        "version": version,
        "advert_1s": runs.remove("advert_1s"),
        "advert_100ms": runs.remove("advert_100ms"),
        "machine_during": Machine::take().since(&before),
    }))
}

async fn version(keepalived: &Path) -> Option<String> {
    let mut child = Command::new(keepalived)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut text = String::new();
    child
        .stderr
        .take()?
        .take(4096)
        .read_to_string(&mut text)
        .await
        .ok()?;
    child.wait().await.ok()?;
    text.lines().next().map(str::to_owned)
}

/// Two namespaces with one end of a veth pair each; deleted on Drop.
#[derive(Debug)]
struct Namespaces {
    ip: PathBuf,
    /// Namespace and interface names: master side, backup side.
    names: [String; 2],
    deleted: bool,
}

impl Namespaces {
    async fn create(ip: &Path) -> anyhow::Result<Namespaces> {
        let pid = std::process::id();
        let names = [format!("lsb{pid}m"), format!("lsb{pid}b")];
        let net = Namespaces {
            ip: ip.to_owned(),
            names: names.clone(),
            deleted: false,
        };
        let [m, b] = &names;
        run_ip(ip, &["netns", "add", m]).await?;
        run_ip(ip, &["netns", "add", b]).await?;
        run_ip(ip, &["link", "add", m, "type", "veth", "peer", "name", b]).await?;
        for (i, name) in names.iter().enumerate() {
            let address = format!("{SUBNET}.{}/24", i + 1);
            run_ip(ip, &["link", "set", name, "netns", name]).await?;
            run_ip(ip, &["-n", name, "addr", "add", &address, "dev", name]).await?;
            run_ip(ip, &["-n", name, "link", "set", name, "up"]).await?;
            run_ip(ip, &["-n", name, "link", "set", "lo", "up"]).await?;
        }
        Ok(net)
    }

    async fn delete(mut self) {
        for name in &self.names {
            let _ = run_ip(&self.ip, &["netns", "del", name]).await;
        }
        self.deleted = true;
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        for name in &self.names {
            // A veth still in this namespace (a failed move), then the
            // namespaces; their veth ends go with them.
            let _ = run_blocking(&self.ip, &["link", "del", name]);
            let _ = run_blocking(&self.ip, &["netns", "del", name]);
        }
    }
}

async fn run_ip(ip: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", ip.display()))?
        .wait()
        .await?;
    if !status.success() {
        bail!("ip {} exited with {status}", args.join(" "));
    }
    Ok(())
}

/// For Drop, where nothing can be awaited.
fn run_blocking(program: &Path, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?
        .wait()
}

/// One keepalived in a namespace, in its own process group; the group is
/// killed on Drop.
#[derive(Debug)]
struct Instance {
    kill: PathBuf,
    child: Option<Child>,
    pgid: u32,
}

impl Instance {
    fn start(programs: &Programs, namespace: &str, dir: &Path, who: &str) -> anyhow::Result<Self> {
        let file = |suffix: &str| dir.join(format!("{who}.{suffix}"));
        // The killed incarnation's pid files: a VRRP child's pid that is
        // not reaped yet (or reused) would read as "already running".
        for suffix in ["pid", "vrrp.pid", "checkers.pid"] {
            match std::fs::remove_file(file(suffix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("remove {}", file(suffix).display()));
                }
                _ => {}
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file("log"))
            .with_context(|| format!("open {}", file("log").display()))?;
        let child = Command::new(&programs.ip)
            .args(["netns", "exec", namespace])
            .arg(&programs.keepalived)
            .args(["--dont-fork", "--log-console", "--vrrp", "--dont-respawn"])
            .arg("--use-file")
            .arg(file("conf"))
            .arg("--pid")
            .arg(file("pid"))
            .arg("--vrrp_pid")
            .arg(file("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(file("checkers.pid"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start keepalived")?;
        let pgid = child.id().context("keepalived exited at once")?;
        Ok(Instance {
            kill: programs.kill.clone(),
            child: Some(child),
            pgid,
        })
    }

    /// SIGKILL to the whole group; returns how long `kill` took to run.
    async fn kill_group(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new(&self.kill)
            .args(["-s", "KILL", "--", &format!("-{}", self.pgid)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start kill")?
            .wait()
            .await?;
        let took = started.elapsed();
        if !status.success() {
            bail!("kill -s KILL -- -{} exited with {status}", self.pgid);
        }
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        Ok(took)
    }

    fn must_run(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "keepalived exited with {status}; {} ends:\n{}",
                log.display(),
                tail(log)
            );
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.child.is_some() {
            let group = format!("-{}", self.pgid);
            let _ = run_blocking(&self.kill, &["-s", "KILL", "--", &group]);
        }
    }
}

fn config(interface: &str, who: &str, advert: &str, script: &Path) -> anyhow::Result<String> {
    let (state, priority) = match who {
        "master" => ("MASTER", MASTER_PRIORITY),
        _ => ("BACKUP", BACKUP_PRIORITY),
    };
    let script = script.to_str().context("a non-UTF-8 temporary directory")?;
    if script.contains(['"', ' ', '\\']) {
        bail!("the temporary directory {script:?} has a quote, space or backslash");
    }
    Ok(format!(
        "global_defs {{\n  router_id bench_{who}\n  script_user root\n  vrrp_version 3\n}}\n\
         vrrp_instance bench {{\n  state {state}\n  interface {interface}\n  virtual_router_id 51\n\
         \x20 priority {priority}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {SUBNET}.100/24\n  }}\n\
         \x20 notify_master \"{script} {who} master\"\n  notify_backup \"{script} {who} backup\"\n\
         \x20 notify_fault \"{script} {who} fault\"\n}}\n"
    ))
}

/// One line of the notify script: time, instance, state.
#[derive(Debug)]
struct Line {
    unix_ns: i64,
    who: String,
    state: String,
}

fn read_lines(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some(Line {
                unix_ns: words.next()?.parse().ok()?,
                who: words.next()?.to_owned(),
                state: words.next()?.to_owned(),
            })
        })
        .collect()
}

/// The latest state each instance announced after line `from`.
fn states_after(lines: &[Line], from: usize) -> (Option<&str>, Option<&str>) {
    let last = |who: &str| {
        lines
            .iter()
            .skip(from)
            .rev()
            .find(|l| l.who == who)
            .map(|l| l.state.as_str())
    };
    (last("master"), last("backup"))
}

async fn advert_run(
    programs: &Programs,
    net: &Namespaces,
    dir: &Path,
    advert: &str,
    trials: u64,
) -> anyhow::Result<serde_json::Value> {
    let advert_ms: u64 = if advert == "1" { 1000 } else { 100 };
    let journal = dir.join("journal");
    let script = dir.join("notify.sh");
    let journal_text = journal
        .to_str()
        .context("a non-UTF-8 temporary directory")?;
    if journal_text.contains('\'') {
        bail!("the temporary directory {journal_text:?} has a single quote");
    }
    // The same first command as our action script.
    write_script(
        &script,
        &format!("#!/bin/sh\nt=$(/bin/date +%s%N)\necho \"$t $1 $2\" >> '{journal_text}'\n"),
    )?;
    let [m, b] = &net.names;
    for (who, interface) in [("master", m), ("backup", b)] {
        std::fs::write(
            dir.join(format!("{who}.conf")),
            config(interface, who, advert, &script)?,
        )
        .context("write keepalived.conf")?;
    }
    let master_log = dir.join("master.log");
    let backup_log = dir.join("backup.log");
    let mut master = Instance::start(programs, m, dir, "master")?;
    let mut backup = Instance::start(programs, b, dir, "backup")?;
    settle(
        &journal,
        0,
        &mut master,
        &mut backup,
        &master_log,
        &backup_log,
    )
    .await?;

    let mut totals = Vec::new();
    let mut kills = Vec::new();
    let mut all = Vec::new();
    let mut failed = Vec::new();
    for trial in 1..=trials {
        // A few adverts in the settled state, then a random phase.
        tokio::time::sleep(Duration::from_millis(2 * advert_ms + jitter(advert_ms))).await;
        let from = read_lines(&journal).len();
        let t0 = unix_ns();
        let mono = Instant::now();
        let took = master.kill_group().await?;
        let timeout = Duration::from_millis(10 * advert_ms) + Duration::from_secs(5);
        let t1 = loop {
            let lines = read_lines(&journal);
            if let Some(line) = lines
                .iter()
                .skip(from)
                .find(|l| l.who == "backup" && l.state == "master")
            {
                break Some(line.unix_ns);
            }
            backup.must_run(&backup_log)?;
            if mono.elapsed() > timeout {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        let Some(t1) = t1 else {
            failed.push(serde_json::json!({
                "trial": trial,
                "error": format!("the backup did not become master within {timeout:?}"),
            }));
            tracing::error!(trial, "keepalived: no notify_master within {timeout:?}");
            master = Instance::start(programs, m, dir, "master")?;
            settle(
                &journal,
                from,
                &mut master,
                &mut backup,
                &master_log,
                &backup_log,
            )
            .await?;
            continue;
        };
        let total_ms = (t1 - t0) as f64 / 1e6;
        tracing::info!(
            trial,
            of = trials,
            advert,
            total_ms = round3(total_ms),
            "keepalived trial"
        );
        totals.push(total_ms);
        kills.push(took.as_secs_f64() * 1e3);
        all.push(serde_json::json!({
            "trial": trial,
            "t0_unix_ns": t0,
            "t1_unix_ns": t1,
            "total_ms": round3(total_ms),
            "kill_command_ms": round3(took.as_secs_f64() * 1e3),
        }));
        // The master comes back and preempts.
        let after_kill = read_lines(&journal).len();
        master = Instance::start(programs, m, dir, "master")?;
        settle(
            &journal,
            after_kill,
            &mut master,
            &mut backup,
            &master_log,
            &backup_log,
        )
        .await?;
        let twice = read_lines(&journal)
            .iter()
            .skip(from)
            .filter(|l| l.who == "backup" && l.state == "master")
            .count();
        if twice > 1 {
            failed.push(serde_json::json!({
                "trial": trial,
                "error": format!("the backup's notify_master ran {twice} times"),
            }));
        }
    }
    drop(master);
    drop(backup);
    // VRRP v3 (RFC 5798): Master_Down_Interval = 3 × advert + skew, skew =
    // (256 − priority) × advert / 256, for the backup's priority.
    let skew_ms = (256 - BACKUP_PRIORITY) as f64 * advert_ms as f64 / 256.0;
    Ok(serde_json::json!({
        "advert_int_s": advert,
        "vrrp_version": 3,
        "trials": trials,
        "measured": totals.len(),
        "failed_trials": failed,
        "total_ms": summary(&totals),
        "master_down_interval_ms": round3(3.0 * advert_ms as f64 + skew_ms),
        "kill_command_ms": summary(&kills),
        "all": all,
    }))
}

/// Waits until, after journal line `from`, the master announced MASTER and
/// the backup BACKUP (each its latest word).
async fn settle(
    journal: &Path,
    from: usize,
    master: &mut Instance,
    backup: &mut Instance,
    master_log: &Path,
    backup_log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let lines = read_lines(journal);
        let (m, b) = states_after(&lines, from);
        // The backup may have said nothing new if it never left BACKUP.
        let b = b.or_else(|| states_after(&lines, 0).1);
        if m == Some("master") && b == Some("backup") {
            return Ok(());
        }
        master.must_run(master_log)?;
        backup.must_run(backup_log)?;
        if Instant::now() > deadline {
            bail!(
                "keepalived did not settle (master MASTER, backup BACKUP) within {START_TIMEOUT:?}: master said {m:?}, backup {b:?}; the master's log ends:\n{}",
                tail(master_log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_state_of_each_instance_counts() {
        let lines = vec![
            Line {
                unix_ns: 1,
                who: "master".into(),
                state: "backup".into(),
            },
            Line {
                unix_ns: 2,
                who: "backup".into(),
                state: "backup".into(),
            },
            Line {
                unix_ns: 3,
                who: "master".into(),
                state: "master".into(),
            },
        ];
        assert_eq!(states_after(&lines, 0), (Some("master"), Some("backup")));
        assert_eq!(states_after(&lines, 2), (Some("master"), None));
    }

    #[test]
    fn the_configuration_names_the_priorities_and_the_script() {
        let text = config("lsb1m", "master", "0.1", Path::new("/tmp/x/notify.sh")).expect("config");
        assert!(text.contains("priority 150"), "{text}");
        assert!(text.contains("advert_int 0.1"), "{text}");
        assert!(
            text.contains("notify_master \"/tmp/x/notify.sh master master\""),
            "{text}"
        );
        assert!(config("i", "backup", "1", Path::new("/tmp/a b/n.sh")).is_err());
    }
}
