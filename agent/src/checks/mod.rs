//! Local health checks: the `[[check]]` tables of agent.toml, run on a
//! timer, each run ending in one bounded `v1::CheckResult`.
//!
//! Kinds: `tcp` (connect), `http` (GET over HTTP/1.1, optionally TLS),
//! `exec` (a Nagios plugin, so Debian's monitoring-plugins run unchanged)
//! and `grpc` (`grpc.health.v1.Health/Check`).
//!
//! How results are used (DESIGN.md §5): the controller fails a path after
//! `fail_after` consecutive CRITICAL results of a vantage point's check;
//! WARNING counts as ok, UNKNOWN as neither. So a probe that cannot reach
//! what it checks — refused, unreachable, TLS failure, no answer within the
//! timeout, a plugin that hangs — is CRITICAL, while a check that cannot
//! say anything (a missing plugin binary, an exit code outside 0–3) is
//! UNKNOWN.
//!
//! Invariants:
//! - [`run_once`] never panics and always returns a result: within the
//!   check's timeout for tcp, http and grpc; for exec at the timeout plus a
//!   bounded reap of the killed process group.
//! - Every result is within the bounds of the wire contract (summary ≤ 1024
//!   bytes cut on a char boundary, ≤ 32 perf entries with bounded labels
//!   and units, finite numbers), so the controller never rejects a report
//!   because of a check.
//! - No shell anywhere: exec checks run an argv with a cleared environment,
//!   in their own process group, which is killed as a whole at the timeout
//!   and when the check is dropped.
//! - Leitstand's own connections stay TLS 1.3 (`leitstand_proto::tls`);
//!   only checks of city services may speak TLS 1.2 ([`tls`]).
//!
//! Files: `config` parses and validates; `tcp`, `http`, `exec`, `grpc` are
//! the probes; `perfdata` reads Nagios plugin output; `net` connects (TCP,
//! TLS) for http and grpc; `runner` schedules.

mod config;
mod exec;
mod grpc;
mod http;
mod net;
mod perfdata;
mod runner;
mod tcp;
#[cfg(test)]
mod test_support;
mod tls;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leitstand_proto::domain::Identifier;
use leitstand_proto::domain::bounds::{
    MAX_PERF_DATA, MAX_PERF_LABEL_BYTES, MAX_PERF_UNIT_BYTES, MAX_SUMMARY_BYTES,
};
use leitstand_proto::v1::{self, CheckStatus, PerfDatum};
use tokio::time::Instant;

pub(crate) use config::{RawCheck, parse_checks};
pub(crate) use exec::read_capped;
pub(crate) use runner::CheckRunner;

/// Checks that run at the same time, at most, unless configured otherwise.
pub(crate) const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 8;

/// One validated `[[check]]`.
#[derive(Debug, Clone)]
pub(crate) struct CheckSpec {
    pub(crate) name: Identifier,
    /// Time between the starts of two runs (plus a random 0..=jitter).
    pub(crate) interval: Duration,
    /// A run that takes longer ends CRITICAL.
    pub(crate) timeout: Duration,
    /// Spreads the runs of many agents and checks: the first run starts
    /// after a random delay in 0..=jitter, each later one a random 0..=jitter
    /// after `interval`.
    pub(crate) jitter: Duration,
    pub(crate) probe: Probe,
}

/// What a check does, by kind.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    Tcp(tcp::TcpProbe),
    Http(http::HttpProbe),
    Exec(exec::ExecProbe),
    Grpc(grpc::GrpcProbe),
}

impl Probe {
    /// The kind as written in agent.toml.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp(_) => "tcp",
            Probe::Http(_) => "http",
            Probe::Exec(_) => "exec",
            Probe::Grpc(_) => "grpc",
        }
    }
}

/// What a probe found, before it is bounded into a `v1::CheckResult`.
#[derive(Debug)]
struct Outcome {
    status: CheckStatus,
    summary: String,
    perf: Vec<PerfDatum>,
}

impl Outcome {
    fn new(status: CheckStatus, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            summary: summary.into(),
            perf: Vec::new(),
        }
    }
    fn ok(summary: impl Into<String>) -> Self {
        Outcome::new(CheckStatus::Ok, summary)
    }
    fn critical(summary: impl Into<String>) -> Self {
        Outcome::new(CheckStatus::Critical, summary)
    }
    fn unknown(summary: impl Into<String>) -> Self {
        Outcome::new(CheckStatus::Unknown, summary)
    }
    fn with_perf(mut self, perf: Vec<PerfDatum>) -> Self {
        self.perf = perf;
        self
    }
}

/// Runs one check with its timeout; never panics; always returns a result.
pub(crate) async fn run_once(spec: &CheckSpec) -> v1::CheckResult {
    let started = Instant::now();
    let outcome = match &spec.probe {
        Probe::Tcp(p) => within(spec.timeout, p.describe(), p.run(started)).await,
        Probe::Http(p) => within(spec.timeout, p.describe(), p.run(started)).await,
        Probe::Grpc(p) => within(spec.timeout, p.describe(), p.run(started)).await,
        // Exec checks handle their own timeout: the process group must be
        // killed and reaped, not merely abandoned.
        Probe::Exec(p) => p.run(spec.timeout).await,
    };
    bounded_result(&spec.name, outcome, started.elapsed())
}

/// `probe`, or CRITICAL when it does not finish within `timeout`.
async fn within(timeout: Duration, what: String, probe: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout(timeout, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::critical(format!(
            "timed out after {}: {what}",
            format_duration(timeout)
        )),
    }
}

/// The wire result of an outcome, within every bound of the contract.
fn bounded_result(name: &Identifier, outcome: Outcome, duration: Duration) -> v1::CheckResult {
    let mut summary = outcome.summary;
    truncate_utf8(&mut summary, MAX_SUMMARY_BYTES);
    let perf = outcome
        .perf
        .into_iter()
        .filter_map(bounded_perf)
        .take(MAX_PERF_DATA)
        .collect();
    v1::CheckResult {
        name: name.as_str().to_owned(),
        status: outcome.status as i32,
        summary,
        observed_at_unix_ms: unix_ms(),
        duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        perf,
    }
}

/// A perf datum within bounds: a non-empty label and a finite value, or
/// nothing; non-finite thresholds are dropped, long labels and units cut.
fn bounded_perf(mut datum: PerfDatum) -> Option<PerfDatum> {
    truncate_utf8(&mut datum.label, MAX_PERF_LABEL_BYTES);
    truncate_utf8(&mut datum.unit, MAX_PERF_UNIT_BYTES);
    if datum.label.is_empty() || !datum.value.is_finite() {
        return None;
    }
    for limit in [
        &mut datum.warn,
        &mut datum.crit,
        &mut datum.min,
        &mut datum.max,
    ] {
        if limit.is_some_and(|v| !v.is_finite()) {
            *limit = None;
        }
    }
    Some(datum)
}

/// A perf datum with only a value and a unit.
fn perf(label: &str, value: f64, unit: &str) -> PerfDatum {
    PerfDatum {
        label: label.to_owned(),
        value,
        unit: unit.to_owned(),
        ..PerfDatum::default()
    }
}

/// Cuts `text` to at most `max` bytes, on a char boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .max(1)
}

/// "300ms", "10s", "1.5s": how a duration is written in agent.toml.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}µs", d.as_micros())
        }
    } else {
        let secs = format!("{:.3}", d.as_secs_f64());
        format!("{}s", secs.trim_end_matches('0'))
    }
}

/// "0.4 ms", "12 ms": a measured time for a summary.
fn format_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_utf8_whole() {
        let check = |text: &str, max: usize, expected: &str| {
            let mut s = text.to_owned();
            truncate_utf8(&mut s, max);
            assert_eq!(s, expected, "{text:?} cut to {max}");
        };
        check("abc", 3, "abc");
        check("abc", 2, "ab");
        check("aä", 2, "a");
        check("aä", 3, "aä");
        check("€€", 5, "€");
        check("", 0, "");
    }

    #[test]
    fn results_are_bounded() {
        let name = Identifier::new("big").expect("identifier");
        let mut perf_data: Vec<PerfDatum> = (0..40)
            .map(|i| perf(&format!("l{i}"), f64::from(i), "s"))
            .collect();
        perf_data.insert(0, perf(&"ä".repeat(40), 1.0, "kilobytes/s"));
        perf_data.insert(1, perf("", 1.0, ""));
        perf_data.insert(2, perf("nan", f64::NAN, ""));
        perf_data.insert(
            3,
            PerfDatum {
                warn: Some(f64::INFINITY),
                crit: Some(5.0),
                ..perf("inf-warn", 1.0, "")
            },
        );
        let outcome = Outcome::ok("ö".repeat(600)).with_perf(perf_data);
        let result = bounded_result(&name, outcome, Duration::from_millis(3));
        test_support::must_be_valid(&result);
        assert_eq!(result.summary.len(), 1024);
        assert_eq!(result.perf.len(), 32);
        assert_eq!(result.perf[0].label, "ä".repeat(32));
        assert_eq!(result.perf[0].unit, "kilobyte");
        assert_eq!(result.perf[1].label, "inf-warn");
        assert_eq!(
            (result.perf[1].warn, result.perf[1].crit),
            (None, Some(5.0))
        );
        assert_eq!(result.duration_us, 3000);
    }

    #[test]
    fn reasons_say_each_cause_once() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error, &'static str);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.1)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let cause = || std::io::Error::other("refused");
        assert_eq!(
            leitstand_proto::error_chain(&Wrapper(cause(), "transport error")),
            "transport error: refused"
        );
        assert_eq!(
            leitstand_proto::error_chain(&Wrapper(cause(), "failed: refused")),
            "failed: refused"
        );
    }

    #[test]
    fn durations_read_as_in_agent_toml() {
        let check = |d: Duration, expected: &str| assert_eq!(format_duration(d), expected);
        check(Duration::from_millis(300), "300ms");
        check(Duration::from_secs(10), "10s");
        check(Duration::from_millis(1500), "1.5s");
        check(Duration::from_millis(1250), "1.25s");
        check(Duration::from_micros(1500), "1500µs");
    }
}
