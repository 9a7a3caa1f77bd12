//! The invariant checker: DESIGN.md §6's I1–I8, election safety and replica
//! convergence, judged from what a drill leaves behind — the audit chains
//! the controllers serve, the executors' journals, the observer's samples,
//! the controllers' logs and the scenario's own record (ground truth: when
//! which path was really broken, what was acknowledged, what must have been
//! refused). A violation names its evidence.
//!
//! Pure functions over data: the checker's own tests feed it histories
//! with a violation of each kind and see it named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use leitstand_controller::audit::{AuditEntry, verify};
use leitstand_controller::runbook::{Runbook, Silence};
use serde::Deserialize;

use crate::sandbox::{Epoch, Execution, Record, Sample};

/// How far back from a decision the ground truth must show its path broken
/// for the decision not to be a false failover (I5): fail_after × interval,
/// report delays and stale_after, generously.
const OUTAGE_LOOKBACK_MS: i64 = 5_000;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Verdict {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) held: bool,
    /// What was checked, in numbers.
    pub(crate) checked: String,
    /// Each violation with its evidence.
    pub(crate) violations: Vec<String>,
}

/// Everything the checker reads.
#[derive(Debug, Default)]
pub(crate) struct History<'a> {
    /// The audit chain each reachable controller served at the end.
    pub(crate) audits: BTreeMap<u64, Vec<AuditEntry>>,
    pub(crate) executions: Vec<Execution>,
    pub(crate) samples: Vec<Sample>,
    /// (node, term, when) from "this controller now leads the cluster".
    pub(crate) claims: Vec<(u64, u64, String)>,
    pub(crate) record: Option<&'a Record>,
    /// Every live controller reached one applied index with one digest
    /// after the final heal (the runner's last step); None: not attempted.
    pub(crate) converged: Option<Result<u64, String>>,
    /// The executor's local allowlist: (agent, path activated).
    pub(crate) allowlist: BTreeSet<(String, String)>,
}

/// A decision as the audit chain tells it.
#[derive(Debug, Clone, Deserialize)]
struct Proposed {
    id: String,
    service: String,
    from_path: String,
    to_path: String,
    kind: String,
    mode: String,
    fencing_term: u64,
    fencing_index: u64,
    runbook_version: u64,
    evidence: Vec<EvidenceItem>,
    proposed_at_unix_ms: i64,
    #[serde(default)]
    operator: String,
}

#[derive(Debug, Clone, Deserialize)]
struct EvidenceItem {
    agent: String,
    check: String,
    path: String,
    status: String,
    consecutive: u32,
}

#[derive(Debug, Clone)]
struct DecisionStory {
    proposed: Proposed,
    proposed_log_index: u64,
    /// (log index, stage) of every later step.
    steps: Vec<(u64, String)>,
}

impl DecisionStory {
    fn final_stage(&self) -> &str {
        self.steps.last().map_or("proposed", |(_, s)| s.as_str())
    }

    fn terminal_at(&self) -> Option<u64> {
        self.steps
            .iter()
            .find(|(_, s)| matches!(s.as_str(), "verified" | "abandoned" | "rejected"))
            .map(|(i, _)| *i)
    }

    fn token(&self) -> (u64, u64) {
        (self.proposed.fencing_term, self.proposed.fencing_index)
    }
}

fn decisions(entries: &[AuditEntry]) -> (BTreeMap<String, DecisionStory>, Vec<String>) {
    let mut stories = BTreeMap::new();
    let mut problems = Vec::new();
    for e in entries {
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&e.body_json) else {
            problems.push(format!(
                "audit entry {} ({}): the body is not JSON",
                e.index, e.kind
            ));
            continue;
        };
        if e.kind == "decision.proposed" || e.kind == "operator.switch" {
            match serde_json::from_value::<Proposed>(body) {
                Ok(proposed) => {
                    stories.insert(
                        proposed.id.clone(),
                        DecisionStory {
                            proposed,
                            proposed_log_index: e.log_index,
                            steps: Vec::new(),
                        },
                    );
                }
                Err(err) => problems.push(format!(
                    "audit entry {} ({}): not a decision: {err}",
                    e.index, e.kind
                )),
            }
        } else if let (Some(id), Some(stage)) = (body["decision"].as_str(), body["stage"].as_str())
        {
            match stories.get_mut(id) {
                Some(story) => story.steps.push((e.log_index, stage.to_owned())),
                None => problems.push(format!(
                    "audit entry {} ({}) names decision {id}, which was never proposed",
                    e.index, e.kind
                )),
            }
        }
    }
    (stories, problems)
}

fn verdict(
    id: &'static str,
    title: &'static str,
    checked: String,
    violations: Vec<String>,
) -> Verdict {
    Verdict {
        id,
        title,
        held: violations.is_empty(),
        checked,
        violations,
    }
}

/// Checks every invariant; one verdict each, in a fixed order.
pub(crate) fn check(history: &History<'_>) -> Vec<Verdict> {
    // The longest chain is the reference; I6 compares the others with it.
    let reference = history
        .audits
        .values()
        .max_by_key(|a| a.len())
        .cloned()
        .unwrap_or_default();
    let earlier = history
        .record
        .map(|r| r.earlier.as_slice())
        .unwrap_or_default();
    // One story list per cluster incarnation: a rebuilt cluster starts its
    // terms, indices and decision ids afresh.
    let mut epochs = Vec::new();
    let mut problems = Vec::new();
    for chain in earlier
        .iter()
        .map(|e| &e.chain)
        .chain(std::iter::once(&reference))
    {
        let (stories, trouble) = decisions(chain);
        epochs.push(stories);
        problems.extend(trouble);
    }
    let mut claims: Vec<Vec<(u64, u64, String)>> =
        earlier.iter().map(|e| e.claims.clone()).collect();
    claims.push(history.claims.clone());
    let mut samples: Vec<Vec<Sample>> = earlier.iter().map(|e| e.samples.clone()).collect();
    samples.push(history.samples.clone());
    let mut audits_verified: Vec<&Vec<AuditEntry>> = earlier.iter().map(|e| &e.chain).collect();
    audits_verified.extend(history.audits.values());
    vec![
        one_active_path(&epochs, &history.executions),
        no_stale_execution(&history.executions),
        once(&epochs, &history.executions, &problems),
        evidence(&epochs, history.record),
        no_false_failover(&epochs, history.record),
        durability(&history.audits, earlier, history.record),
        liveness(&history.executions, history.record),
        security(&history.executions, history.record, &history.allowlist),
        election_safety(&claims, &samples),
        convergence(&samples, history.converged.as_ref()),
    ]
}

type Stories = BTreeMap<String, DecisionStory>;

fn every_story(epochs: &[Stories]) -> impl Iterator<Item = &DecisionStory> {
    epochs.iter().flat_map(|e| e.values())
}

fn one_active_path(epochs: &[Stories], executions: &[Execution]) -> Verdict {
    let mut violations = Vec::new();
    for stories in epochs {
        two_in_flight(stories, &mut violations);
    }
    let mut last: BTreeMap<&str, &Execution> = BTreeMap::new();
    for e in executions {
        if let Some(prev) = last.get(e.service.as_str())
            && e.token < prev.token
        {
            violations.push(format!(
                "service {}: {} ran {} with token {}.{} after {} ran {} with token {}.{}",
                e.service,
                e.agent,
                e.decision,
                e.token.0,
                e.token.1,
                prev.agent,
                prev.decision,
                prev.token.0,
                prev.token.1
            ));
        }
        last.insert(&e.service, e);
    }
    verdict(
        "I1",
        "one active path",
        format!(
            "{} decisions in the audit chain, {} executions in the journals",
            every_story(epochs).count(),
            executions.len()
        ),
        violations,
    )
}

/// Within one cluster's chain: a decision proposed while the previous one
/// for its service was still in flight.
fn two_in_flight(stories: &Stories, violations: &mut Vec<String>) {
    let mut by_service: BTreeMap<&str, Vec<&DecisionStory>> = BTreeMap::new();
    for s in stories.values() {
        by_service.entry(&s.proposed.service).or_default().push(s);
    }
    for (service, mut list) in by_service {
        list.sort_by_key(|s| s.proposed_log_index);
        for pair in list.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let done = before.terminal_at();
            if done.is_none_or(|t| t > after.proposed_log_index) {
                violations.push(format!(
                    "service {service}: decision {} (log index {}) was proposed while {} was still {} — two activations in flight",
                    after.proposed.id,
                    after.proposed_log_index,
                    before.proposed.id,
                    before.final_stage()
                ));
            }
        }
    }
}

fn no_stale_execution(executions: &[Execution]) -> Verdict {
    let mut violations = Vec::new();
    let mut highest: BTreeMap<(&str, &str), &Execution> = BTreeMap::new();
    for e in executions {
        let key = (e.agent.as_str(), e.service.as_str());
        match highest.get(&key) {
            Some(h) if e.token < h.token => violations.push(format!(
                "agent {} ran decision {} for {} with token {}.{} after it had run {} with the higher token {}.{}",
                e.agent, e.decision, e.service, e.token.0, e.token.1, h.decision, h.token.0, h.token.1
            )),
            Some(h) if h.token >= e.token => {}
            _ => {
                highest.insert(key, e);
            }
        }
    }
    verdict(
        "I2",
        "no stale execution",
        format!(
            "{} executions across {} executor/service pairs",
            executions.len(),
            highest.len()
        ),
        violations,
    )
}

fn once(epochs: &[Stories], executions: &[Execution], problems: &[String]) -> Verdict {
    let mut violations: Vec<String> = problems.to_vec();
    // (agent, decision id, token) → its executions.
    type Runs<'e> = BTreeMap<(&'e str, &'e str, (u64, u64)), Vec<&'e Execution>>;
    let mut runs: Runs<'_> = BTreeMap::new();
    for e in executions {
        runs.entry((&e.agent, &e.decision, e.token))
            .or_default()
            .push(e);
    }
    for ((agent, decision, token), list) in &runs {
        if list.len() > 1 {
            violations.push(format!(
                "agent {agent} ran decision {decision} {} times (at unix ns {})",
                list.len(),
                list.iter()
                    .map(|e| e.unix_ns.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let explained =
            every_story(epochs).any(|s| s.proposed.id == *decision && s.token() == *token);
        if !explained {
            violations.push(format!(
                "agent {agent} ran {decision} with token {}.{}, which no decision in the audit chain explains",
                token.0, token.1
            ));
        }
    }
    for story in every_story(epochs) {
        if story.terminal_at().is_none() {
            violations.push(format!(
                "decision {} ({} → {}) ends the drill {} — no terminal record",
                story.proposed.id,
                story.proposed.from_path,
                story.proposed.to_path,
                story.final_stage()
            ));
        }
    }
    verdict(
        "I3",
        "once, and always a terminal record",
        format!(
            "{} decisions, {} executed",
            every_story(epochs).count(),
            runs.len()
        ),
        violations,
    )
}

fn evidence(epochs: &[Stories], record: Option<&Record>) -> Verdict {
    let mut violations = Vec::new();
    let mut checked = 0;
    let mut parsed: BTreeMap<u64, Runbook> = BTreeMap::new();
    for story in every_story(epochs) {
        let d = &story.proposed;
        if d.kind == "manual" || !d.operator.is_empty() || d.mode != "auto" {
            continue;
        }
        checked += 1;
        let runbook = match parsed.get(&d.runbook_version) {
            Some(r) => r.clone(),
            None => {
                let Some(text) = record.and_then(|r| r.runbooks.get(&d.runbook_version)) else {
                    violations.push(format!(
                        "decision {}: runbook version {} is not one the drill applied",
                        d.id, d.runbook_version
                    ));
                    continue;
                };
                match Runbook::parse(Path::new("drill.toml"), text) {
                    Ok(r) => {
                        parsed.insert(d.runbook_version, r.clone());
                        r
                    }
                    Err(e) => {
                        violations.push(format!("runbook version {}: {e}", d.runbook_version));
                        continue;
                    }
                }
            }
        };
        if let Err(why) = recompute(d, &runbook) {
            violations.push(format!(
                "decision {} ({} → {}): {why}",
                d.id, d.from_path, d.to_path
            ));
        }
    }
    verdict(
        "I4",
        "evidence recomputable from the audit record",
        format!("{checked} automatic decisions recomputed"),
        violations,
    )
}

/// The decision's evidence against its runbook version's thresholds.
fn recompute(d: &Proposed, runbook: &Runbook) -> Result<(), String> {
    let service = runbook.service(&d.service).ok_or_else(|| {
        format!(
            "service {} is not in runbook version {}",
            d.service, d.runbook_version
        )
    })?;
    let path = |name: &str| {
        service
            .paths
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "path {name} is not in runbook version {}",
                    d.runbook_version
                )
            })
    };
    // Observation times are the agents' clocks (a skewed one is a drill of
    // its own), so they are not compared with the decision's time.
    let counted = |p: &leitstand_controller::runbook::Path, statuses: &[&str], threshold: u32| {
        let names: BTreeSet<(String, String)> = p
            .vantage
            .iter()
            .map(|v| (v.agent.to_string(), v.check.to_string()))
            .collect();
        d.evidence
            .iter()
            .filter(|e| e.path == p.name.as_str())
            .filter(|e| names.contains(&(e.agent.clone(), e.check.clone())))
            .filter(|e| statuses.contains(&e.status.as_str()) && e.consecutive >= threshold)
            .map(|e| (e.agent.clone(), e.check.clone()))
            .collect::<BTreeSet<_>>()
            .len() as u32
    };
    if d.kind == "failover" {
        let from = path(&d.from_path)?;
        let failing: &[&str] = match from.silence_means {
            Silence::Failed => &["critical", "stale"],
            Silence::Unknown => &["critical"],
        };
        let n = counted(from, failing, from.fail_after);
        if n < from.quorum {
            return Err(format!(
                "{n} vantage points of {} failing with ≥ {} consecutive results; quorum is {}",
                d.from_path, from.fail_after, from.quorum
            ));
        }
    }
    let to = path(&d.to_path)?;
    let n = counted(to, &["ok", "warning"], to.recover_after);
    if n < to.quorum {
        return Err(format!(
            "{n} vantage points of {} passing with ≥ {} consecutive results; quorum is {}",
            d.to_path, to.recover_after, to.quorum
        ));
    }
    Ok(())
}

fn no_false_failover(epochs: &[Stories], record: Option<&Record>) -> Verdict {
    let mut violations = Vec::new();
    let mut checked = 0;
    let outages = record.map(|r| r.outages.as_slice()).unwrap_or_default();
    for story in every_story(epochs) {
        let d = &story.proposed;
        if d.kind != "failover" {
            continue;
        }
        checked += 1;
        let t = d.proposed_at_unix_ms;
        let broken = outages.iter().any(|o| {
            o.path == d.from_path
                && o.from_unix_ms <= t
                && o.to_unix_ms.is_none_or(|end| end >= t - OUTAGE_LOOKBACK_MS)
        });
        if !broken {
            violations.push(format!(
                "decision {} failed {} away at unix ms {t}, but the drill had not broken {} within the {OUTAGE_LOOKBACK_MS} ms before (outages: {})",
                d.id,
                d.from_path,
                d.from_path,
                outages
                    .iter()
                    .map(|o| format!("{} {}..{}", o.path, o.from_unix_ms, o.to_unix_ms.map_or("open".into(), |e| e.to_string())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    verdict(
        "I5",
        "no false failover",
        format!(
            "{checked} automatic failovers compared with {} real outages",
            outages.len()
        ),
        violations,
    )
}

fn durability(
    audits: &BTreeMap<u64, Vec<AuditEntry>>,
    earlier: &[Epoch],
    record: Option<&Record>,
) -> Verdict {
    let mut violations = Vec::new();
    for (n, epoch) in earlier.iter().enumerate() {
        if let Err(broken) = verify(&epoch.chain) {
            violations.push(format!(
                "the audit chain of cluster incarnation {} does not verify: {broken}",
                n + 1
            ));
        }
    }
    if audits.is_empty() {
        violations.push("no controller served its audit chain at the end".to_owned());
    }
    for (node, chain) in audits {
        if let Err(broken) = verify(chain) {
            violations.push(format!(
                "controller {node}: the audit chain does not verify: {broken}"
            ));
        }
        if chain.first().is_some_and(|e| e.index != 1) {
            violations.push(format!(
                "controller {node}: the chain does not start at entry 1"
            ));
        }
    }
    // Every pair agrees on what both hold.
    let nodes: Vec<_> = audits.iter().collect();
    for (i, (a, chain_a)) in nodes.iter().enumerate() {
        for (b, chain_b) in &nodes[i + 1..] {
            if let Some((x, y)) = chain_a
                .iter()
                .zip(chain_b.iter())
                .find(|(x, y)| x.hash != y.hash)
            {
                violations.push(format!(
                    "controllers {a} and {b} differ at audit entry {}: {} vs {} ({} vs {})",
                    x.index, x.hash, y.hash, x.kind, y.kind
                ));
            }
        }
    }
    let acknowledged = record
        .map(|r| r.acknowledged.as_slice())
        .unwrap_or_default();
    for (node, chain) in audits {
        for (index, what) in acknowledged {
            let found = chain.iter().find(|e| e.index == *index);
            match found {
                Some(e) if e.kind.starts_with("operator.") => {}
                Some(e) => violations.push(format!(
                    "controller {node}: acknowledged {what} was audit entry {index}, which now is {}",
                    e.kind
                )),
                None => violations.push(format!(
                    "controller {node}: acknowledged {what} (audit entry {index}) is missing; its chain has {} entries",
                    chain.len()
                )),
            }
        }
    }
    verdict(
        "I6",
        "durability; the audit chain verifies end to end",
        format!(
            "{} chains ({} entries at most), {} acknowledged actions",
            audits.len(),
            audits.values().map(Vec::len).max().unwrap_or(0),
            acknowledged.len()
        ),
        violations,
    )
}

fn liveness(executions: &[Execution], record: Option<&Record>) -> Verdict {
    let budget = crate::sandbox::LIVENESS_BUDGET_MS;
    let mut violations = Vec::new();
    let mut figures = Vec::new();
    let expectations = record.map(|r| r.liveness.as_slice()).unwrap_or_default();
    for l in expectations {
        let first = executions
            .iter()
            .filter(|e| e.path == l.to_path && e.unix_ns / 1_000_000 >= l.clock_from_unix_ms)
            .map(|e| e.unix_ns / 1_000_000)
            .min();
        match first {
            Some(at) if at - l.clock_from_unix_ms <= budget => {
                figures.push(format!("{} ms", at - l.clock_from_unix_ms));
            }
            Some(at) => violations.push(format!(
                "{}: the activation of {} ran {} ms after the clock started, budget {budget} ms",
                l.why,
                l.to_path,
                at - l.clock_from_unix_ms
            )),
            None => violations.push(format!(
                "{}: no activation of {} ran at all after unix ms {}",
                l.why, l.to_path, l.clock_from_unix_ms
            )),
        }
    }
    verdict(
        "I7",
        "liveness: failover within fail_after × interval + 2 s",
        if expectations.is_empty() {
            "no failover expected in this drill".to_owned()
        } else {
            format!(
                "{} failovers expected within {budget} ms; took {}",
                expectations.len(),
                if figures.is_empty() {
                    "-".into()
                } else {
                    figures.join(", ")
                }
            )
        },
        violations,
    )
}

fn security(
    executions: &[Execution],
    record: Option<&Record>,
    allowlist: &BTreeSet<(String, String)>,
) -> Verdict {
    let mut violations = Vec::new();
    let probes = record.map(|r| r.security.as_slice()).unwrap_or_default();
    for p in probes.iter().filter(|p| !p.refused) {
        violations.push(format!("{} was not refused: {}", p.what, p.detail));
    }
    for e in executions {
        if !allowlist.contains(&(e.agent.clone(), e.path.clone())) {
            violations.push(format!(
                "agent {} ran an activation of {} that is not in its local allowlist",
                e.agent, e.path
            ));
        }
    }
    verdict(
        "I8",
        "security: only valid certificates act; only allowlisted actions run",
        format!(
            "{} refusals probed, {} executions against the allowlist",
            probes.len(),
            executions.len()
        ),
        violations,
    )
}

fn election_safety(claims: &[Vec<(u64, u64, String)>], samples: &[Vec<Sample>]) -> Verdict {
    let mut violations = Vec::new();
    let mut terms = 0;
    for (epoch, (claims, samples)) in claims.iter().zip(samples).enumerate() {
        let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (node, term, _) in claims {
            leaders.entry(*term).or_default().insert(*node);
        }
        for s in samples {
            if s.leader != 0 && s.leader == s.node {
                leaders.entry(s.term).or_default().insert(s.node);
            }
        }
        terms += leaders.len();
        violations.extend(leaders.iter().filter(|(_, nodes)| nodes.len() > 1).map(
            |(term, nodes)| {
                let incarnation = if epoch > 0 {
                    format!(" (cluster incarnation {})", epoch + 1)
                } else {
                    String::new()
                };
                format!("term {term} had leaders {nodes:?}{incarnation}")
            },
        ));
    }
    let (claims, samples): (usize, usize) = (
        claims.iter().map(Vec::len).sum(),
        samples.iter().map(Vec::len).sum(),
    );
    verdict(
        "election",
        "at most one leader per term",
        format!("{terms} terms with a leader, from {claims} log claims and {samples} samples"),
        violations,
    )
}

fn convergence(samples: &[Vec<Sample>], converged: Option<&Result<u64, String>>) -> Verdict {
    let mut violations = Vec::new();
    let mut compared = 0;
    for samples in samples {
        let mut at_index: BTreeMap<u64, BTreeMap<String, BTreeSet<u64>>> = BTreeMap::new();
        for s in samples.iter().filter(|s| !s.digest.is_empty()) {
            at_index
                .entry(s.digest_index)
                .or_default()
                .entry(s.digest.clone())
                .or_default()
                .insert(s.node);
        }
        compared += at_index
            .values()
            .filter(|d| d.values().map(BTreeSet::len).sum::<usize>() > 1)
            .count();
        diverging(&at_index, &mut violations);
    }
    let end = match converged {
        Some(Ok(index)) => format!("all live controllers at applied index {index} with one digest"),
        Some(Err(why)) => {
            violations.push(format!(
                "the replicas did not converge after the faults were healed: {why}"
            ));
            "no convergence".into()
        }
        None => "final convergence not checked".into(),
    };
    verdict(
        "convergence",
        "equal state at equal applied index",
        format!("{compared} applied indices seen on more than one controller; {end}"),
        violations,
    )
}

fn diverging(
    at_index: &BTreeMap<u64, BTreeMap<String, BTreeSet<u64>>>,
    violations: &mut Vec<String>,
) {
    for (index, digests) in at_index {
        if digests.len() > 1 {
            violations.push(format!(
                "applied index {index}: different state digests {}",
                digests
                    .iter()
                    .map(|(d, nodes)| format!("{}… on {nodes:?}", &d[..d.len().min(12)]))
                    .collect::<Vec<_>>()
                    .join(" vs ")
            ));
        }
    }
}

#[cfg(test)]
mod tests;
