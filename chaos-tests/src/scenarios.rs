//! The drill scenarios: each a sandbox shape and a fault schedule. What a
//! scenario expects of the system beyond the invariants (a decision that
//! must wait, an alarm that must sound) it records as an expectation; the
//! invariants themselves are judged afterwards from the evidence
//! (`invariants.rs`), the same way for every scenario.
//!
//! Holding a fault for a while is the experiment, not synchronisation: the
//! `hold` waits are the fault schedule. Everything the drill waits *for* is
//! awaited with a bounded poll that names what it waited for.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::v1;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::proxy::{Direction, Fault};
use crate::sandbox::{
    BACKUP, EXECUTOR, PRIMARY, RunbookShape, Sandbox, Spec, WITNESS, service, sim_agent, unix_ms,
};

type Step<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One drill.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) summary: &'static str,
    /// Part of the short set CI runs every time.
    pub(crate) short: bool,
    /// Needs root (a tmpfs); skipped with a reason otherwise.
    pub(crate) needs_root: bool,
    /// Needs `--network netns` (packet-level faults); in a proxy-mode run
    /// of a set it is skipped with a reason, named alone it is a usage error.
    pub(crate) needs_netns: bool,
    pub(crate) spec: fn() -> Spec,
    pub(crate) run: for<'a> fn(&'a mut Sandbox, &'a mut StdRng) -> Step<'a>,
}

const FAILOVER_WITHIN: Duration = Duration::from_secs(20);
const ELECTION_WITHIN: Duration = Duration::from_secs(20);

pub(crate) fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "leader-killed-during-dispatch",
            summary: "The executor is frozen while a decision is dispatched to it; the leader is SIGKILLed; the next leader finishes the decision and it runs once.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(leader_killed_during_dispatch(s, r)),
        },
        Scenario {
            name: "leader-isolated",
            summary: "The leader is cut from the other controllers and from the agents; the majority elects a new leader and fails over.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(leader_isolated(s, r)),
        },
        Scenario {
            name: "partition-symmetric",
            summary: "Five controllers split 2 | 3 with the leader on the minority side; the majority takes over; after healing all converge.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: five,
            run: |s, r| Box::pin(partition_symmetric(s, r)),
        },
        Scenario {
            name: "partition-asymmetric",
            summary: "The leader's messages reach the followers but theirs do not reach it (one-way loss); the cluster must not stall.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(partition_asymmetric(s, r)),
        },
        Scenario {
            name: "lossy-links",
            summary: "Every controller link and every agent link loses 25 % of its packets each way (plus 50 ms ± 20 ms where the kernel has netem) while the active path breaks; the cluster keeps a leader and fails over in time.",
            short: false,
            needs_root: false,
            needs_netns: true,
            spec: three,
            run: |s, r| Box::pin(lossy_links(s, r)),
        },
        Scenario {
            name: "agents-cut-from-leader",
            summary: "The agents cannot reach the leader (the controllers can): no false failover while blind; failover once the agents are back.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(agents_cut_from_leader(s, r)),
        },
        Scenario {
            name: "rolling-restart",
            summary: "Every controller is restarted in turn (SIGTERM, start, caught up) while the active path breaks midway.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(rolling_restart(s, r)),
        },
        Scenario {
            name: "all-paths-down",
            summary: "Both paths break: an alarm, no switch; the backup comes back: failover to it.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(all_paths_down(s, r)),
        },
        Scenario {
            name: "executor-down",
            summary: "The executor agent is killed, then the active path breaks; the decision waits for the executor and runs once when it is back.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(executor_down(s, r)),
        },
        Scenario {
            name: "vantage-silent",
            summary: "First one, then every vantage point falls silent (SIGSTOP); silence is not failure: no failover.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(vantage_silent(s, r)),
        },
        Scenario {
            name: "flapping-path",
            summary: "The primary path breaks and recovers again and again with failback after 1 s; the flap guard freezes the service.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: || Spec {
                runbook: RunbookShape {
                    failback_after: Some("1s"),
                    max_per_hour: 3,
                    ..RunbookShape::default()
                },
                ..Spec::new(3)
            },
            run: |s, r| Box::pin(flapping_path(s, r)),
        },
        Scenario {
            name: "controller-disk-full",
            summary: "Controller 3's data directory (a 16 MiB tmpfs) fills up while the cluster works; the others go on; after space is freed it catches up.",
            short: false,
            needs_root: true,
            needs_netns: false,
            spec: || Spec {
                small_disk: Some((3, 16)),
                ..Spec::new(3)
            },
            run: |s, r| Box::pin(controller_disk_full(s, r)),
        },
        Scenario {
            name: "revoked-agent-certificate",
            summary: "The witness agent's certificate is revoked and the CRL reloaded (SIGHUP): its session ends and its reports are refused; failover still works.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(revoked_agent_certificate(s, r)),
        },
        Scenario {
            name: "expired-agent-certificate",
            summary: "The witness agent runs on a certificate that expires during the run: its session ends at expiry and its reports are refused; failover still works.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(expired_agent_certificate(s, r)),
        },
        Scenario {
            name: "malformed-message-flood",
            summary: "A rogue agent floods oversized, out-of-bounds, replayed and forged messages; other certificates try what their kind may not; the controllers stay up and fail over in time.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(malformed_flood(s, r)),
        },
        Scenario {
            name: "agent-clock-skew",
            summary: "A third vantage point reports with its clock an hour ahead, then an hour behind; detection runs on the controller's clock: no false failover, failover in time.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: || Spec {
                runbook: RunbookShape {
                    extra_primary_vantage: vec![(SKEWED.into(), PRIMARY.into())],
                    ..RunbookShape::default()
                },
                ..Spec::new(3)
            },
            run: |s, r| Box::pin(agent_clock_skew(s, r)),
        },
        Scenario {
            name: "five-lose-two",
            summary: "Five controllers lose two (the leader among them) to SIGKILL; acknowledged operator actions survive; the three fail over.",
            short: true,
            needs_root: false,
            needs_netns: false,
            spec: five,
            run: |s, r| Box::pin(five_lose_two(s, r)),
        },
        Scenario {
            name: "follower-needs-snapshot",
            summary: "A follower is frozen while the log is compacted past it (snapshot every 50 entries); it catches up from a snapshot.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: || Spec {
                snapshots: Some((50, 10)),
                ..Spec::new(3)
            },
            run: |s, r| Box::pin(follower_needs_snapshot(s, r)),
        },
        Scenario {
            name: "restored-from-old-backup",
            summary: "After a failover the whole controller cluster is rebuilt empty (an old backup); its first decision carries a lower fencing token, and the executor refuses it.",
            short: false,
            needs_root: false,
            needs_netns: false,
            spec: three,
            run: |s, r| Box::pin(restored_from_old_backup(s, r)),
        },
    ]
}

fn three() -> Spec {
    Spec::new(3)
}

fn five() -> Spec {
    Spec::new(5)
}

const SKEWED: &str = "site-3";

/// Breaks the primary path and expects the failover (I7 from the break).
async fn break_primary_expect_failover(s: &mut Sandbox, why: &str) -> anyhow::Result<()> {
    let at = s.break_path(PRIMARY).await?;
    s.expect_failover(BACKUP, at, why);
    active_becomes(s, BACKUP).await;
    Ok(())
}

async fn active_becomes(s: &mut Sandbox, path: &str) -> bool {
    let target = path.to_owned();
    s.expect_within(
        &format!("{path} becomes the active path"),
        FAILOVER_WITHIN,
        move |v| service(v).is_some_and(|svc| svc.active_path == target),
    )
    .await
}

async fn hold(s: &mut Sandbox, what: &str, duration: Duration) {
    s.note(format!("holding for {} ms: {what}", duration.as_millis()));
    tokio::time::sleep(duration).await;
}

fn others(s: &Sandbox, leader: u64) -> Vec<u64> {
    s.ids().into_iter().filter(|id| *id != leader).collect()
}

/// No decision exists in the leader's view (the drill proposed none).
async fn expect_no_decision(s: &mut Sandbox, while_what: &str) -> anyhow::Result<()> {
    let view = s.view().await?;
    let none = view.decisions.is_empty();
    let detail = crate::sandbox::describe(&view);
    s.expect(format!("no decision while {while_what}"), none, detail);
    Ok(())
}

async fn leader_killed_during_dispatch(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    s.freeze_agent(EXECUTOR)?;
    s.break_path(PRIMARY).await?;
    s.wait_for(
        "a decision dispatched to the frozen executor",
        FAILOVER_WITHIN,
        |v| {
            v.decisions
                .iter()
                .any(|d| d.stage == v1::DecisionStage::Dispatched as i32)
        },
    )
    .await?;
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    s.kill_controller(leader).await?;
    let next = s.must_have_leader(ELECTION_WITHIN).await?;
    s.note(format!("controller {next} leads"));
    s.thaw_agent(EXECUTOR)?;
    // The executor was unreachable until now: I7's clock starts here.
    s.expect_failover(
        BACKUP,
        unix_ms(),
        "the executor is back after the leader died mid-dispatch",
    );
    active_becomes(s, BACKUP).await;
    s.restart_controller(leader).await?;
    Ok(())
}

async fn leader_isolated(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let rest = others(s, leader);
    s.partition(&[leader], &rest).await?;
    s.set_agent_link(
        leader,
        Fault::Blackhole {
            direction: Direction::Both,
        },
    )
    .await?;
    let next = wait_for_leader_among(s, &rest).await?;
    s.note(format!("controller {next} leads the majority"));
    break_primary_expect_failover(s, "fiber broken while the old leader is isolated").await?;
    s.heal_network().await?;
    Ok(())
}

async fn wait_for_leader_among(s: &mut Sandbox, candidates: &[u64]) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + ELECTION_WITHIN;
    loop {
        for &id in candidates {
            if let Ok(status) = s.cluster_status(id).await
                && status.confirmed_by_quorum
                && status.leader_id != 0
                && candidates.contains(&status.leader_id)
            {
                return Ok(status.leader_id);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "none of {candidates:?} became a confirmed leader within {ELECTION_WITHIN:?}; {}",
                s.observations.describe_latest()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn partition_symmetric(s: &mut Sandbox, rng: &mut StdRng) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let mut rest = others(s, leader);
    rest.shuffle(rng);
    let minority = vec![leader, rest[0]];
    let majority = rest[1..].to_vec();
    s.partition(&minority, &majority).await?;
    let next = wait_for_leader_among(s, &majority).await?;
    s.note(format!("controller {next} leads the majority {majority:?}"));
    break_primary_expect_failover(s, "fiber broken during a 2 | 3 partition").await?;
    s.heal_network().await?;
    Ok(())
}

async fn partition_asymmetric(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    for f in others(s, leader) {
        s.set_peer_link(
            f,
            leader,
            Fault::Blackhole {
                direction: Direction::Both,
            },
        )
        .await?;
    }
    let at = s.break_path(PRIMARY).await?;
    s.expect_failover(
        BACKUP,
        at,
        "fiber broken while the leader hears no follower",
    );
    active_becomes(s, BACKUP).await;
    s.heal_network().await?;
    Ok(())
}

/// Packet loss inside the TLS streams (TCP retransmits, HTTP/2 keepalives
/// late): heartbeats, reports and dispatches all get through late or
/// twice-sent, never not at all.
const LOSS: f64 = 0.25;

async fn lossy_links(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    // Delay and jitter need sch_netem; a kernel without it gets the loss
    // alone, and the timeline says so.
    let (delay, jitter) = if s.has_netem() {
        (Duration::from_millis(50), Duration::from_millis(20))
    } else {
        s.note(
            "this kernel has no sch_netem: the links get the packet loss without delay and jitter",
        );
        (Duration::ZERO, Duration::ZERO)
    };
    s.degrade_every_link(crate::sandbox::netns::PacketFault {
        loss: LOSS,
        delay,
        jitter,
    })
    .await?;
    hold(
        s,
        "every link lossy, both paths healthy",
        Duration::from_secs(4),
    )
    .await;
    // Evidence that the fault was real: the loss rules' counters.
    let lost = s
        .lost_packets()
        .await
        .context("packet counters exist in netns mode")??;
    s.expect(
        "the links really lost packets",
        lost > 0,
        format!("{lost} packets dropped by the loss rules so far"),
    );
    expect_no_decision(s, "every link lost packets and both paths were healthy").await?;
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    s.note(format!("controller {leader} leads through the loss"));
    break_primary_expect_failover(s, "fiber broken while every link loses packets").await?;
    hold(
        s,
        "the loss goes on after the failover",
        Duration::from_secs(2),
    )
    .await;
    s.heal_network().await?;
    Ok(())
}

async fn agents_cut_from_leader(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    s.set_agent_link(
        leader,
        Fault::Blackhole {
            direction: Direction::Both,
        },
    )
    .await?;
    hold(s, "the leader hears no agent", Duration::from_secs(6)).await;
    expect_no_decision(s, "the agents were cut from the leader").await?;
    s.break_path(PRIMARY).await?;
    hold(
        s,
        "fiber broken while the leader is blind",
        Duration::from_secs(3),
    )
    .await;
    s.heal_network().await?;
    // The executor and the vantage points are reachable again from here.
    s.expect_failover(
        BACKUP,
        unix_ms(),
        "the agents reach the leader again, fiber broken",
    );
    active_becomes(s, BACKUP).await;
    Ok(())
}

async fn rolling_restart(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let ids = s.ids();
    for (n, id) in ids.iter().enumerate() {
        s.terminate_controller(*id).await?;
        let rest = others(s, *id);
        wait_for_leader_among(s, &rest).await?;
        if n == 1 {
            break_primary_expect_failover(s, "fiber broken during the rolling restart").await?;
        }
        s.restart_controller(*id).await?;
        caught_up(s, *id).await?;
    }
    Ok(())
}

/// Waits until controller `id` applied what the leader had committed.
async fn caught_up(s: &mut Sandbox, id: u64) -> anyhow::Result<()> {
    caught_up_restarting(s, id, false).await
}

/// [`caught_up`]; with `restart_if_gone`, a controller that exits meanwhile
/// is started again (once).
async fn caught_up_restarting(
    s: &mut Sandbox,
    id: u64,
    mut restart_if_gone: bool,
) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let target = s.cluster_status(leader).await?.commit_index;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = s.cluster_status(id).await
            && status.applied_index >= target
        {
            s.note(format!(
                "controller {id} caught up (applied {} ≥ {target})",
                status.applied_index
            ));
            return Ok(());
        }
        if restart_if_gone
            && !s
                .controllers
                .iter_mut()
                .any(|c| c.id == id && c.process.is_running())
        {
            restart_if_gone = false;
            s.note(format!("controller {id} has exited since"));
            s.restart_controller(id).await?;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("controller {id} did not apply index {target} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_paths_down(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    s.break_path(PRIMARY).await?;
    s.break_path(BACKUP).await?;
    s.expect_within("the no-healthy-path alarm", FAILOVER_WITHIN, |v| {
        service(v).is_some_and(|svc| svc.no_healthy_path)
    })
    .await;
    hold(s, "both paths down", Duration::from_secs(3)).await;
    expect_no_decision(s, "no path was healthy").await?;
    s.repair_path(BACKUP).await?;
    s.expect_failover(
        BACKUP,
        unix_ms(),
        "the backup path is back while the primary is down",
    );
    active_becomes(s, BACKUP).await;
    Ok(())
}

async fn executor_down(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    s.kill_agent(EXECUTOR).await?;
    s.break_path(PRIMARY).await?;
    s.wait_for("a decision for the broken fiber", FAILOVER_WITHIN, |v| {
        !v.decisions.is_empty()
    })
    .await?;
    hold(
        s,
        "the decision waits for its executor",
        Duration::from_secs(3),
    )
    .await;
    s.start_agent(EXECUTOR)?;
    s.expect_failover(BACKUP, unix_ms(), "the executor is back; fiber broken");
    active_becomes(s, BACKUP).await;
    Ok(())
}

async fn vantage_silent(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    s.freeze_agent(WITNESS)?;
    hold(s, "one vantage point silent", Duration::from_secs(4)).await;
    s.freeze_agent(EXECUTOR)?;
    hold(
        s,
        "every vantage point silent, beyond stale_after",
        Duration::from_secs(5),
    )
    .await;
    expect_no_decision(s, "the vantage points were silent").await?;
    s.thaw_agent(EXECUTOR)?;
    s.thaw_agent(WITNESS)?;
    s.expect_within("both paths healthy again", FAILOVER_WITHIN, |v| {
        service(v).is_some_and(|svc| {
            svc.paths
                .iter()
                .all(|p| p.state == v1::PathState::Healthy as i32)
        })
    })
    .await;
    break_primary_expect_failover(s, "fiber broken after the silence").await
}

async fn flapping_path(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    for round in 1..=4 {
        let at = s.break_path(PRIMARY).await?;
        if round == 1 {
            s.expect_failover(BACKUP, at, "fiber broken the first time");
        }
        let switched = s
            .wait_for(
                &format!("round {round}: lte active or the service frozen"),
                FAILOVER_WITHIN,
                |v| service(v).is_some_and(|svc| svc.active_path == BACKUP || svc.frozen),
            )
            .await?;
        // The switch is verified before the path changes again: a break
        // during verification would abandon it (and, rightly, keep the
        // engine off that target for a while).
        s.settle(FAILOVER_WITHIN).await?;
        s.repair_path(PRIMARY).await?;
        if service(&switched).is_some_and(|svc| svc.frozen) {
            break;
        }
        let back = s
            .wait_for(
                &format!("round {round}: failback to fiber or the service frozen"),
                FAILOVER_WITHIN,
                |v| service(v).is_some_and(|svc| svc.active_path == PRIMARY || svc.frozen),
            )
            .await?;
        if service(&back).is_some_and(|svc| svc.frozen) {
            break;
        }
        s.settle(FAILOVER_WITHIN).await?;
    }
    let view = s.view().await?;
    let frozen = service(&view).is_some_and(|svc| svc.frozen);
    let automatic = view
        .decisions
        .iter()
        .filter(|d| d.operator.is_empty())
        .count();
    s.expect(
        "the flap guard froze the service after at most 3 automatic switches",
        frozen && automatic <= 3,
        format!(
            "frozen {frozen}, {automatic} automatic decisions; {}",
            crate::sandbox::describe(&view)
        ),
    );
    s.unfreeze().await?;
    Ok(())
}

async fn controller_disk_full(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let node = 3;
    let filler = s
        .controllers
        .iter()
        .find(|c| c.id == node)
        .map(|c| c.data_dir.join("filler"))
        .context("no controller 3")?;
    let written = fill(&filler)?;
    s.note(format!(
        "controller {node}'s disk filled ({} KiB of filler)",
        written / 1024
    ));
    s.probes(300).await?;
    break_primary_expect_failover(s, "fiber broken while controller 3's disk is full").await?;
    let exited = !s
        .controllers
        .iter_mut()
        .any(|c| c.id == node && c.process.is_running());
    s.note(format!(
        "controller {node} is {}",
        if exited {
            "no longer running"
        } else {
            "still running"
        }
    ));
    std::fs::remove_file(&filler).with_context(|| format!("remove {}", filler.display()))?;
    s.note(format!("controller {node}'s disk has space again"));
    if exited {
        s.restart_controller(node).await?;
    }
    // A node that hit the full disk may still be on its way out (it drains
    // its connections before it exits 1): restarted once it has gone.
    caught_up_restarting(s, node, !exited).await
}

/// Writes zeros to `path` until the file system is full; returns the bytes.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e).with_context(|| format!("fill {}", path.display())),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

async fn revoked_agent_certificate(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let serial = leitstand_proto::pki::revoke(&s.pki_dir, PeerKind::Agent, WITNESS)
        .context("revoke the witness's certificate")?;
    s.note(format!(
        "agent {WITNESS}'s certificate (serial {serial}) revoked in the CRL"
    ));
    s.hangup_controllers()?;
    let shut_out = witness_shut_out(s, "revoked", Duration::from_secs(10)).await;
    s.security_probe(
        "reports of an agent whose certificate was revoked during the run",
        shut_out.refused,
        shut_out.detail,
    );
    break_primary_expect_failover(s, "fiber broken after the witness was revoked").await
}

/// How the witness fared once its certificate became invalid.
struct ShutOut {
    /// Disconnected in time, then 3 s later still so with no report
    /// accepted meanwhile.
    refused: bool,
    detail: String,
    /// When the drill saw it disconnected (or gave up waiting).
    at: time::OffsetDateTime,
}

/// Waits up to `within` until the witness, whose certificate is `cause`
/// (revoked, expired), is disconnected; then checks for 3 s that it stays
/// out while it keeps trying.
async fn witness_shut_out(s: &mut Sandbox, cause: &str, within: Duration) -> ShutOut {
    let disconnected = s
        .wait_for(&format!("{WITNESS} disconnected"), within, |v| {
            v.agents
                .iter()
                .any(|a| a.agent_id == WITNESS && !a.connected)
        })
        .await;
    let at = time::OffsetDateTime::now_utc();
    let before = disconnected.as_ref().ok().and_then(|v| {
        v.agents
            .iter()
            .find(|a| a.agent_id == WITNESS)
            .map(|a| a.last_seq)
    });
    hold(
        s,
        &format!("the {cause} agent keeps trying"),
        Duration::from_secs(3),
    )
    .await;
    let after = match s.view().await {
        Ok(view) => view
            .agents
            .iter()
            .find(|a| a.agent_id == WITNESS)
            .map(|a| (a.last_seq, a.connected)),
        Err(_) => None,
    };
    ShutOut {
        refused: disconnected.is_ok()
            && after.is_some_and(|(seq, connected)| !connected && Some(seq) == before),
        detail: format!(
            "disconnected: {}; last accepted seq before {before:?}, after {after:?}",
            disconnected
                .as_ref()
                .map_or_else(|e| format!("{e:#}"), |_| "yes".into()),
        ),
        at,
    }
}

/// `leitstand_inputs_rejected_total` summed over every controller, for one
/// reason or all.
async fn rejected_total(s: &Sandbox, reason: Option<&str>) -> f64 {
    let mut counted = 0.0;
    for id in s.ids() {
        let text = s.metrics_text(id).await.unwrap_or_default();
        counted += text
            .lines()
            .filter(|l| l.starts_with("leitstand_inputs_rejected_total"))
            .filter(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    counted
}

/// How long the witness's short-lived certificate lasts from its restart.
const SHORT_LIVED: Duration = Duration::from_secs(8);

async fn expired_agent_certificate(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    // A certificate's notAfter has whole seconds: the issued one ends at
    // the second, not at the instant asked for.
    let asked = now + SHORT_LIVED;
    let expires = asked.replace_nanosecond(0).unwrap_or(asked);
    s.issue(
        PeerKind::Agent,
        WITNESS,
        leitstand_proto::pki::Validity {
            not_before: now - time::Duration::minutes(1),
            not_after: expires,
        },
    )?;
    s.kill_agent(WITNESS).await?;
    s.start_agent(WITNESS)?;
    s.note(format!(
        "agent {WITNESS} restarted on a certificate that expires in {} s ({expires})",
        SHORT_LIVED.as_secs()
    ));
    s.wait_for(
        &format!("{WITNESS} connected on its short-lived certificate"),
        SHORT_LIVED / 2,
        |v| {
            v.agents
                .iter()
                .any(|a| a.agent_id == WITNESS && a.connected)
        },
    )
    .await?;
    let shut_out = witness_shut_out(s, "expired", SHORT_LIVED + Duration::from_secs(3)).await;
    let ended_after_expiry = shut_out.at >= expires;
    s.security_probe(
        "reports of an agent whose certificate expired during the run",
        shut_out.refused && ended_after_expiry,
        format!("{}; after notAfter: {ended_after_expiry}", shut_out.detail),
    );
    let counted = rejected_total(s, Some("certificate_expired")).await;
    s.expect(
        "the refusals are counted (leitstand_inputs_rejected_total, reason certificate_expired)",
        counted >= 1.0,
        format!("{counted} counted across the controllers"),
    );
    break_primary_expect_failover(s, "fiber broken after the witness's certificate expired").await
}

async fn malformed_flood(s: &mut Sandbox, rng: &mut StdRng) -> anyhow::Result<()> {
    let rogue = "rogue";
    s.issue(
        PeerKind::Agent,
        rogue,
        leitstand_proto::pki::Validity::days_from_now(1),
    )?;
    s.issue(
        PeerKind::Operator,
        "intruder",
        leitstand_proto::pki::Validity::days_from_now(1),
    )?;
    let agent_tls = sim_agent::tls(&s.pki_dir, PeerKind::Agent, rogue)?;
    let addresses: Vec<String> = s
        .ids()
        .iter()
        .filter_map(|id| s.advertised(*id))
        .map(|a| a.to_string())
        .collect();

    // Forged identity: a Hello naming another agent.
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let leader_address = s
        .advertised(leader)
        .context("the leader's address")?
        .to_string();
    let forged = sim_agent::open(
        &agent_tls,
        &leader_address,
        sim_agent::hello(EXECUTOR, &["fiber"]),
    )
    .await?;
    s.security_probe(
        "a Hello whose agent id is not the certificate's",
        matches!(forged, sim_agent::Opening::Refused(_)),
        format!("{forged:?}").chars().take(300).collect(),
    );
    // An operator certificate opening an agent session.
    let operator_tls = sim_agent::tls(&s.pki_dir, PeerKind::Operator, "intruder")?;
    let wrong_kind = sim_agent::open(
        &operator_tls,
        &leader_address,
        sim_agent::hello("intruder", &[]),
    )
    .await;
    s.security_probe(
        "an operator certificate opening an agent session",
        matches!(wrong_kind, Ok(sim_agent::Opening::Refused(_)) | Err(_)),
        format!("{wrong_kind:?}").chars().take(300).collect(),
    );
    // An agent certificate acting as an operator.
    let operator_call = async {
        let channel = agent_tls.channel(&leader_address).await?;
        let mut client = v1::operator_client::OperatorClient::new(channel);
        Ok::<_, anyhow::Error>(
            client
                .switch(v1::SwitchRequest {
                    service: crate::sandbox::SERVICE.into(),
                    path: BACKUP.into(),
                    reason: "not an operator".into(),
                })
                .await,
        )
    }
    .await;
    s.security_probe(
        "an agent certificate switching a service",
        matches!(&operator_call, Ok(Err(_)) | Err(_)),
        format!("{operator_call:?}").chars().take(300).collect(),
    );

    // The flood, on the leader, while the primary path breaks.
    let mut session = sim_agent::open_on_leader(&agent_tls, &addresses, rogue, &["fiber"]).await?;
    let now = unix_ms();
    let first = session
        .send(sim_agent::report(
            5,
            now,
            vec![sim_agent::check("fiber", true, now)],
        ))
        .await;
    s.note(format!(
        "rogue: a well-formed report seq 5 answered {first:?}"
    ));
    let replay = session
        .send(sim_agent::report(
            5,
            now,
            vec![sim_agent::check("fiber", true, now)],
        ))
        .await;
    s.security_probe(
        "a replayed report (seq 5 again) acknowledged as new",
        !matches!(replay, Ok(Some(seq)) if seq > 5),
        format!("{replay:?}"),
    );
    let break_task = s.break_path(PRIMARY).await?;
    s.expect_failover(
        BACKUP,
        break_task,
        "fiber broken during a malformed-message flood",
    );
    let mut refused = 0u64;
    let mut sent = 0u64;
    let flood_until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut seq = 10u64;
    while tokio::time::Instant::now() < flood_until {
        seq += 1;
        let now = unix_ms();
        let message = match rng.gen_range(0..4) {
            // Over the 1 MiB bound.
            0 => sim_agent::report(
                seq,
                now,
                vec![v1::CheckResult {
                    name: "fiber".into(),
                    status: v1::CheckStatus::Ok as i32,
                    summary: "x".repeat(2 << 20),
                    observed_at_unix_ms: now,
                    ..Default::default()
                }],
            ),
            // 300 checks: over the 256 bound.
            1 => sim_agent::report(
                seq,
                now,
                (0..300)
                    .map(|i| sim_agent::check(&format!("c{i}"), true, now))
                    .collect(),
            ),
            // Not an identifier.
            2 => sim_agent::report(
                seq,
                now,
                vec![sim_agent::check("no such/check ✗", true, now)],
            ),
            // A second Hello.
            _ => sim_agent::hello(rogue, &["fiber"]),
        };
        sent += 1;
        match session.send(message).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                refused += 1;
                // The stream may be over: open a fresh one and go on.
                if let Ok(fresh) =
                    sim_agent::open_on_leader(&agent_tls, &addresses, rogue, &["fiber"]).await
                {
                    session = fresh;
                }
            }
        }
    }
    s.security_probe(
        "malformed and oversized messages",
        refused == sent,
        format!("{refused} of {sent} refused"),
    );
    active_becomes(s, BACKUP).await;
    let counted = rejected_total(s, None).await;
    s.expect(
        "the refusals are counted (leitstand_inputs_rejected_total)",
        counted >= refused as f64,
        format!("{counted} counted across the controllers, {refused} refusals seen"),
    );
    let alive = s.controllers.iter_mut().all(|c| c.process.is_running());
    s.expect("every controller still runs after the flood", alive, "");
    Ok(())
}

async fn agent_clock_skew(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    s.issue(
        PeerKind::Agent,
        SKEWED,
        leitstand_proto::pki::Validity::days_from_now(1),
    )?;
    let tls = sim_agent::tls(&s.pki_dir, PeerKind::Agent, SKEWED)?;
    let addresses: Vec<String> = s
        .ids()
        .iter()
        .filter_map(|id| s.advertised(*id))
        .map(|a| a.to_string())
        .collect();
    let fiber = s
        .endpoints
        .get(PRIMARY)
        .map(|e| e.address())
        .context("the fiber endpoint")?;
    let skew = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(3_600_000));
    let skew_task = skew.clone();
    // The skewed agent checks the real fiber endpoint and reports the truth,
    // with its clock off by `skew`.
    let reporter = tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            let Ok(mut session) =
                sim_agent::open_on_leader(&tls, &addresses, SKEWED, &[PRIMARY]).await
            else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            loop {
                let ok = tokio::time::timeout(
                    Duration::from_millis(150),
                    tokio::net::TcpStream::connect(fiber),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                let at = unix_ms() + skew_task.load(std::sync::atomic::Ordering::Relaxed);
                seq += 1;
                if session
                    .send(sim_agent::report(
                        seq,
                        at,
                        vec![sim_agent::check(PRIMARY, ok, at)],
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    s.note(format!("{SKEWED} reports with its clock one hour ahead"));
    hold(s, "a vantage point an hour ahead", Duration::from_secs(4)).await;
    skew.store(-3_600_000, std::sync::atomic::Ordering::Relaxed);
    s.note(format!("{SKEWED}'s clock now one hour behind"));
    hold(s, "a vantage point an hour behind", Duration::from_secs(4)).await;
    expect_no_decision(s, "a vantage point's clock was skewed").await?;
    let result =
        break_primary_expect_failover(s, "fiber broken; one vantage point's clock an hour behind")
            .await;
    reporter.abort();
    result
}

async fn five_lose_two(s: &mut Sandbox, rng: &mut StdRng) -> anyhow::Result<()> {
    // Acknowledged operator actions before the loss (I6).
    s.switch(BACKUP, "drill: before losing two controllers")
        .await?;
    active_becomes(s, BACKUP).await;
    s.settle(FAILOVER_WITHIN).await?;
    s.switch(PRIMARY, "drill: back before losing two controllers")
        .await?;
    active_becomes(s, PRIMARY).await;
    s.settle(FAILOVER_WITHIN).await?;
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let mut rest = others(s, leader);
    rest.shuffle(rng);
    let second = rest[0];
    s.kill_controller(leader).await?;
    s.kill_controller(second).await?;
    let survivors = rest[1..].to_vec();
    wait_for_leader_among(s, &survivors).await?;
    break_primary_expect_failover(s, "fiber broken with two of five controllers dead").await?;
    s.restart_controller(leader).await?;
    s.restart_controller(second).await?;
    Ok(())
}

async fn follower_needs_snapshot(s: &mut Sandbox, rng: &mut StdRng) -> anyhow::Result<()> {
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let rest = others(s, leader);
    let follower = rest[rng.gen_range(0..rest.len())];
    let log_before = std::fs::metadata(&s.controllers[(follower - 1) as usize].process.log)
        .map(|m| m.len())
        .unwrap_or(0);
    s.freeze_controller(follower)?;
    s.probes(200).await?;
    s.thaw_controller(follower)?;
    caught_up(s, follower).await?;
    let log = std::fs::read_to_string(&s.controllers[(follower - 1) as usize].process.log)
        .unwrap_or_default();
    let tail = log.get(log_before as usize..).unwrap_or_default();
    let via_snapshot = tail.lines().any(|l| l.to_lowercase().contains("snapshot"));
    s.expect(
        format!("controller {follower} caught up from a snapshot"),
        via_snapshot,
        "its log after the thaw mentions a snapshot",
    );
    break_primary_expect_failover(s, "fiber broken after the follower caught up").await
}

async fn restored_from_old_backup(s: &mut Sandbox, _rng: &mut StdRng) -> anyhow::Result<()> {
    // Push the old cluster's fencing tokens up: elections and log entries.
    for _ in 0..2 {
        let leader = s.must_have_leader(ELECTION_WITHIN).await?;
        s.restart_controller(leader).await?;
        s.must_have_leader(ELECTION_WITHIN).await?;
    }
    s.probes(100).await?;
    break_primary_expect_failover(s, "fiber broken on the original cluster").await?;
    s.settle(FAILOVER_WITHIN).await?;
    s.repair_path(PRIMARY).await?;
    // The old cluster's story is evidence too.
    let leader = s.must_have_leader(ELECTION_WITHIN).await?;
    let chain = s.audit(leader).await?;
    for id in s.ids() {
        s.wipe_controller(id).await?;
    }
    s.new_incarnation(chain)?;
    for id in s.ids() {
        s.restart_controller(id).await?;
    }
    s.must_have_leader(Duration::from_secs(60)).await?;
    let runbook = s.spec.runbook.text();
    s.apply_runbook(&runbook).await?;
    s.wait_for(
        "the restored cluster sees fiber active and healthy",
        Duration::from_secs(60),
        |v| {
            service(v).is_some_and(|svc| {
                svc.active_path == PRIMARY
                    && svc
                        .paths
                        .iter()
                        .all(|p| p.state == v1::PathState::Healthy as i32)
            })
        },
    )
    .await?;
    s.break_path(PRIMARY).await?;
    let view = s
        .wait_for(
            "the restored cluster's decision to end",
            Duration::from_secs(60),
            |v| {
                !v.decisions.is_empty()
                    && v.decisions
                        .iter()
                        .all(|d| crate::sandbox::is_terminal(d.stage))
            },
        )
        .await?;
    let abandoned = view
        .decisions
        .iter()
        .all(|d| d.stage == v1::DecisionStage::Abandoned as i32);
    s.expect(
        "the executor refused the restored cluster's lower fencing token (decision abandoned)",
        abandoned,
        crate::sandbox::describe(&view),
    );
    Ok(())
}
