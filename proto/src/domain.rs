//! Validated domain types. `TryFrom<v1::…>` is the one place where the
//! bounds documented in the .proto files are enforced; code past this edge
//! never sees an out-of-bounds value.

use std::fmt;
use std::time::Duration;

use crate::v1;

/// Bounds of the wire contract, as documented in the .proto files.
pub mod bounds {
    /// Largest message on an AgentGateway Session, either direction.
    pub const MAX_AGENT_MESSAGE_BYTES: usize = 1 << 20;
    /// Largest identifier (agent id, check, action, service, path, decision).
    pub const MAX_IDENTIFIER_BYTES: usize = 64;
    pub const MAX_VERSION_BYTES: usize = 64;
    pub const MAX_NAMES_IN_HELLO: usize = 256;
    pub const MIN_REPORT_INTERVAL_MS: u32 = 100;
    pub const MAX_REPORT_INTERVAL_MS: u32 = 3_600_000;
    pub const MAX_CHECKS_PER_REPORT: usize = 256;
    pub const MAX_SUMMARY_BYTES: usize = 1024;
    pub const MAX_PERF_DATA: usize = 32;
    pub const MAX_PERF_LABEL_BYTES: usize = 64;
    pub const MAX_PERF_UNIT_BYTES: usize = 8;
    pub const MAX_CORES: usize = 4096;
    pub const MAX_FILESYSTEMS: usize = 256;
    pub const MAX_MOUNTPOINT_BYTES: usize = 512;
    pub const MAX_DEVICE_BYTES: usize = 256;
    pub const MAX_FS_TYPE_BYTES: usize = 64;
    pub const MAX_INTERFACES: usize = 256;
    pub const MAX_INTERFACE_NAME_BYTES: usize = 64;
    pub const MAX_TEMPERATURES: usize = 256;
    pub const MAX_SENSOR_BYTES: usize = 128;
    pub const MAX_ACTION_OUTPUT_BYTES: usize = 4096;
    pub const MAX_REASON_BYTES: usize = 1024;
    /// A host:port address (a leader hint, a member address).
    pub const MAX_ADDRESS_BYTES: usize = 256;
    /// Controllers in one cluster: Raft needs a majority of them for every commit.
    pub const MAX_MEMBERS: usize = 9;
    /// Reports an agent keeps unacknowledged while disconnected, at most.
    pub const MAX_BUFFERED_REPORTS: usize = 3600;
    /// Messages a session may send in a burst. Above a full buffer, so
    /// that replaying it after a reconnect is never mistaken for a flood.
    pub const SESSION_BURST_MESSAGES: u32 = 4096;
    /// Messages per second a session may send, sustained.
    pub const SESSION_MESSAGES_PER_SECOND: u32 = 100;
    const _: () = assert!(MAX_BUFFERED_REPORTS + 256 < SESSION_BURST_MESSAGES as usize);
}

use bounds::*;

/// A message field outside its documented bounds. Maps to INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidMessage {
    /// Path of the field, e.g. `report.checks[3].name`.
    pub field: String,
    pub reason: String,
}

impl InvalidMessage {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidMessage {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// 1 to 64 bytes of ASCII letters, digits, '.', '_' and '-'.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(String);

impl Identifier {
    pub fn new(value: &str) -> Result<Self, InvalidMessage> {
        if value.is_empty() || value.len() > MAX_IDENTIFIER_BYTES {
            return Err(InvalidMessage::new(
                "identifier",
                format!(
                    "must be 1 to {MAX_IDENTIFIER_BYTES} bytes, has {}",
                    value.len()
                ),
            ));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidMessage::new(
                "identifier",
                format!("{bad:?} is not allowed; use letters, digits, '.', '_' and '-'"),
            ));
        }
        Ok(Identifier(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Raft node id of a controller: 1 or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    pub fn new(id: u64) -> Option<Self> {
        (id > 0).then_some(NodeId(id))
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of an agent: the name in its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(Identifier);

impl AgentId {
    pub fn new(value: &str) -> Result<Self, InvalidMessage> {
        Identifier::new(value).map(AgentId)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<Identifier> for AgentId {
    fn from(id: Identifier) -> Self {
        AgentId(id)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of the field an error is about: a literal, or a closure that
/// formats an indexed path (`report.checks[3].summary`) only when there is
/// an error to report. A valid report is checked without formatting (and
/// allocating) the names of its fields: at 10 000 reports a second that is
/// a measurable share of the leader's CPU.
trait FieldName {
    fn field_name(self) -> String;
}

impl FieldName for &str {
    fn field_name(self) -> String {
        self.to_owned()
    }
}

impl<F: FnOnce() -> String> FieldName for F {
    fn field_name(self) -> String {
        self()
    }
}

fn identifier(field: impl FieldName, value: &str) -> Result<Identifier, InvalidMessage> {
    Identifier::new(value).map_err(|e| InvalidMessage::new(field.field_name(), e.reason))
}

fn bounded_text(field: impl FieldName, value: &str, max: usize) -> Result<(), InvalidMessage> {
    if value.len() > max {
        Err(InvalidMessage::new(
            field.field_name(),
            format!("has {} bytes, at most {max} allowed", value.len()),
        ))
    } else {
        Ok(())
    }
}

fn bounded_list<T>(field: impl FieldName, list: &[T], max: usize) -> Result<(), InvalidMessage> {
    if list.len() > max {
        Err(InvalidMessage::new(
            field.field_name(),
            format!("has {} entries, at most {max} allowed", list.len()),
        ))
    } else {
        Ok(())
    }
}

fn finite(field: impl FieldName, value: f64) -> Result<(), InvalidMessage> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(InvalidMessage::new(
            field.field_name(),
            "must be a finite number",
        ))
    }
}

fn unit_interval(field: impl FieldName, value: f64) -> Result<(), InvalidMessage> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(InvalidMessage::new(
            field.field_name(),
            format!("{value} is outside 0.0..=1.0"),
        ))
    }
}

fn positive_time(field: impl FieldName, unix_ms: i64) -> Result<(), InvalidMessage> {
    if unix_ms > 0 {
        Ok(())
    } else {
        Err(InvalidMessage::new(
            field.field_name(),
            "must be milliseconds since the Unix epoch, > 0",
        ))
    }
}

fn unique_identifiers(
    field: &str,
    names: &[String],
    max: usize,
) -> Result<Vec<Identifier>, InvalidMessage> {
    bounded_list(field, names, max)?;
    let mut out: Vec<Identifier> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let id = identifier(|| format!("{field}[{i}]"), name)?;
        if out.contains(&id) {
            return Err(InvalidMessage::new(
                format!("{field}[{i}]"),
                format!("{name:?} appears twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

/// A message from an agent, validated.
#[derive(Debug, Clone)]
pub enum AgentMessage {
    Hello(Hello),
    Report(Report),
    ActionResult(ActionResult),
    Announce(Announce),
}

impl TryFrom<v1::AgentMessage> for AgentMessage {
    type Error = InvalidMessage;
    fn try_from(msg: v1::AgentMessage) -> Result<Self, Self::Error> {
        use v1::agent_message::Kind;
        match msg.kind {
            Some(Kind::Hello(h)) => Hello::try_from(h).map(AgentMessage::Hello),
            Some(Kind::Report(r)) => Report::try_from(r).map(AgentMessage::Report),
            Some(Kind::ActionResult(a)) => {
                ActionResult::try_from(a).map(AgentMessage::ActionResult)
            }
            Some(Kind::Announce(a)) => Ok(AgentMessage::Announce(Announce {
                checks: unique_identifiers("announce.checks", &a.checks, MAX_NAMES_IN_HELLO)?,
                actions: unique_identifiers("announce.actions", &a.actions, MAX_NAMES_IN_HELLO)?,
            })),
            None => Err(InvalidMessage::new("agent_message.kind", "empty message")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hello {
    pub agent_id: AgentId,
    pub version: String,
    pub checks: Vec<Identifier>,
    pub actions: Vec<Identifier>,
    pub report_interval: Duration,
    pub incarnation: u64,
}

impl TryFrom<v1::Hello> for Hello {
    type Error = InvalidMessage;
    fn try_from(h: v1::Hello) -> Result<Self, Self::Error> {
        let agent_id = AgentId(identifier("hello.agent_id", &h.agent_id)?);
        if h.version.is_empty()
            || h.version.len() > MAX_VERSION_BYTES
            || !h.version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InvalidMessage::new(
                "hello.version",
                format!("must be 1 to {MAX_VERSION_BYTES} printable ASCII bytes"),
            ));
        }
        let checks = unique_identifiers("hello.checks", &h.checks, MAX_NAMES_IN_HELLO)?;
        let actions = unique_identifiers("hello.actions", &h.actions, MAX_NAMES_IN_HELLO)?;
        if !(MIN_REPORT_INTERVAL_MS..=MAX_REPORT_INTERVAL_MS).contains(&h.report_interval_ms) {
            return Err(InvalidMessage::new(
                "hello.report_interval_ms",
                format!(
                    "{} is outside {MIN_REPORT_INTERVAL_MS}..={MAX_REPORT_INTERVAL_MS}",
                    h.report_interval_ms
                ),
            ));
        }
        if h.incarnation == 0 {
            return Err(InvalidMessage::new("hello.incarnation", "must be > 0"));
        }
        Ok(Hello {
            agent_id,
            version: h.version,
            checks,
            actions,
            report_interval: Duration::from_millis(u64::from(h.report_interval_ms)),
            incarnation: h.incarnation,
        })
    }
}

/// Checks and actions announced after a configuration reload.
#[derive(Debug, Clone)]
pub struct Announce {
    pub checks: Vec<Identifier>,
    pub actions: Vec<Identifier>,
}

/// A check's state, following the Nagios plugin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl CheckStatus {
    fn from_wire(field: impl FieldName, value: i32) -> Result<Self, InvalidMessage> {
        match v1::CheckStatus::try_from(value) {
            Ok(v1::CheckStatus::Ok) => Ok(CheckStatus::Ok),
            Ok(v1::CheckStatus::Warning) => Ok(CheckStatus::Warning),
            Ok(v1::CheckStatus::Critical) => Ok(CheckStatus::Critical),
            Ok(v1::CheckStatus::Unknown) => Ok(CheckStatus::Unknown),
            Ok(v1::CheckStatus::Unspecified) | Err(_) => Err(InvalidMessage::new(
                field.field_name(),
                format!("{value} is not a check status"),
            )),
        }
    }
}

impl From<CheckStatus> for v1::CheckStatus {
    fn from(s: CheckStatus) -> Self {
        match s {
            CheckStatus::Ok => v1::CheckStatus::Ok,
            CheckStatus::Warning => v1::CheckStatus::Warning,
            CheckStatus::Critical => v1::CheckStatus::Critical,
            CheckStatus::Unknown => v1::CheckStatus::Unknown,
        }
    }
}

/// A health report, validated. Host metrics stay in their wire form: they
/// are checked here and passed on unchanged to monitoring.
#[derive(Debug, Clone)]
pub struct Report {
    pub seq: u64,
    pub observed_at_unix_ms: i64,
    pub host: Option<v1::HostMetrics>,
    pub checks: Vec<CheckResult>,
}

impl TryFrom<v1::Report> for Report {
    type Error = InvalidMessage;
    fn try_from(r: v1::Report) -> Result<Self, Self::Error> {
        if r.seq == 0 {
            return Err(InvalidMessage::new(
                "report.seq",
                "sequence numbers start at 1",
            ));
        }
        positive_time("report.observed_at_unix_ms", r.observed_at_unix_ms)?;
        if let Some(host) = &r.host {
            validate_host_metrics(host)?;
        }
        bounded_list("report.checks", &r.checks, MAX_CHECKS_PER_REPORT)?;
        let mut checks: Vec<CheckResult> = Vec::with_capacity(r.checks.len());
        for (i, c) in r.checks.into_iter().enumerate() {
            let check = CheckResult::validate(i, c)?;
            if checks.iter().any(|seen| seen.name == check.name) {
                return Err(InvalidMessage::new(
                    format!("report.checks[{i}].name"),
                    format!("{:?} appears twice", check.name.as_str()),
                ));
            }
            checks.push(check);
        }
        Ok(Report {
            seq: r.seq,
            observed_at_unix_ms: r.observed_at_unix_ms,
            host: r.host,
            checks,
        })
    }
}

fn validate_host_metrics(h: &v1::HostMetrics) -> Result<(), InvalidMessage> {
    unit_interval("report.host.cpu_utilization", h.cpu_utilization)?;
    bounded_list(
        "report.host.cpu_utilization_per_core",
        &h.cpu_utilization_per_core,
        MAX_CORES,
    )?;
    for (i, u) in h.cpu_utilization_per_core.iter().enumerate() {
        unit_interval(|| format!("report.host.cpu_utilization_per_core[{i}]"), *u)?;
    }
    for (field, load) in [
        ("report.host.load_average_1m", h.load_average_1m),
        ("report.host.load_average_5m", h.load_average_5m),
        ("report.host.load_average_15m", h.load_average_15m),
    ] {
        finite(field, load)?;
        if load < 0.0 {
            return Err(InvalidMessage::new(field, "must be >= 0"));
        }
    }
    if h.memory_used_bytes > h.memory_total_bytes {
        return Err(InvalidMessage::new(
            "report.host.memory_used_bytes",
            "exceeds memory_total_bytes",
        ));
    }
    if h.swap_used_bytes > h.swap_total_bytes {
        return Err(InvalidMessage::new(
            "report.host.swap_used_bytes",
            "exceeds swap_total_bytes",
        ));
    }
    bounded_list("report.host.filesystems", &h.filesystems, MAX_FILESYSTEMS)?;
    for (i, fs) in h.filesystems.iter().enumerate() {
        let field = |name: &str| format!("report.host.filesystems[{i}].{name}");
        if fs.mountpoint.is_empty() {
            return Err(InvalidMessage::new(
                field("mountpoint"),
                "must not be empty",
            ));
        }
        bounded_text(|| field("mountpoint"), &fs.mountpoint, MAX_MOUNTPOINT_BYTES)?;
        bounded_text(|| field("device"), &fs.device, MAX_DEVICE_BYTES)?;
        bounded_text(|| field("type"), &fs.r#type, MAX_FS_TYPE_BYTES)?;
        if fs.used_bytes > fs.total_bytes {
            return Err(InvalidMessage::new(
                field("used_bytes"),
                "exceeds total_bytes",
            ));
        }
    }
    bounded_list(
        "report.host.network_interfaces",
        &h.network_interfaces,
        MAX_INTERFACES,
    )?;
    for (i, nic) in h.network_interfaces.iter().enumerate() {
        let field = || format!("report.host.network_interfaces[{i}].name");
        if nic.name.is_empty() {
            return Err(InvalidMessage::new(field(), "must not be empty"));
        }
        bounded_text(field, &nic.name, MAX_INTERFACE_NAME_BYTES)?;
    }
    bounded_list(
        "report.host.temperatures",
        &h.temperatures,
        MAX_TEMPERATURES,
    )?;
    for (i, t) in h.temperatures.iter().enumerate() {
        let field = |name: &str| format!("report.host.temperatures[{i}].{name}");
        if t.sensor.is_empty() {
            return Err(InvalidMessage::new(field("sensor"), "must not be empty"));
        }
        bounded_text(|| field("sensor"), &t.sensor, MAX_SENSOR_BYTES)?;
        if !(t.celsius.is_finite() && (-273.15..=1000.0).contains(&t.celsius)) {
            return Err(InvalidMessage::new(
                field("celsius"),
                "must be within -273.15..=1000",
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: Identifier,
    pub status: CheckStatus,
    pub summary: String,
    pub observed_at_unix_ms: i64,
    pub duration: Duration,
    pub perf: Vec<v1::PerfDatum>,
}

impl CheckResult {
    /// Validates `report.checks[index]`.
    fn validate(index: usize, c: v1::CheckResult) -> Result<Self, InvalidMessage> {
        let field = |name: &str| format!("report.checks[{index}].{name}");
        let name = identifier(|| field("name"), &c.name)?;
        let status = CheckStatus::from_wire(|| field("status"), c.status)?;
        bounded_text(|| field("summary"), &c.summary, MAX_SUMMARY_BYTES)?;
        positive_time(|| field("observed_at_unix_ms"), c.observed_at_unix_ms)?;
        bounded_list(|| field("perf"), &c.perf, MAX_PERF_DATA)?;
        for (i, p) in c.perf.iter().enumerate() {
            let pf = |name: &str| field(&format!("perf[{i}]{name}"));
            if p.label.is_empty() {
                return Err(InvalidMessage::new(pf(".label"), "must not be empty"));
            }
            bounded_text(|| pf(".label"), &p.label, MAX_PERF_LABEL_BYTES)?;
            bounded_text(|| pf(".unit"), &p.unit, MAX_PERF_UNIT_BYTES)?;
            for v in [Some(p.value), p.warn, p.crit, p.min, p.max]
                .into_iter()
                .flatten()
            {
                finite(|| pf(""), v)?;
            }
        }
        Ok(CheckResult {
            name,
            status,
            summary: c.summary,
            observed_at_unix_ms: c.observed_at_unix_ms,
            duration: Duration::from_micros(c.duration_us),
            perf: c.perf,
        })
    }
}

/// Orders activations of one service: (Raft term, log index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken {
    pub term: u64,
    pub index: u64,
}

impl TryFrom<Option<v1::FencingToken>> for FencingToken {
    type Error = InvalidMessage;
    fn try_from(t: Option<v1::FencingToken>) -> Result<Self, Self::Error> {
        match t {
            Some(v1::FencingToken { term, index }) if term > 0 && index > 0 => {
                Ok(FencingToken { term, index })
            }
            Some(_) => Err(InvalidMessage::new(
                "fencing_token",
                "term and index must be >= 1",
            )),
            None => Err(InvalidMessage::new("fencing_token", "missing")),
        }
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.index)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Refused,
}

#[derive(Debug, Clone)]
pub struct ActionResult {
    pub decision_id: Identifier,
    pub service: Identifier,
    pub action: Identifier,
    pub fencing_token: FencingToken,
    pub outcome: ActionOutcome,
    pub exit_code: Option<i32>,
    pub output: String,
    pub reason: String,
    pub duration: Duration,
    pub replayed: bool,
}

impl TryFrom<v1::ActionResult> for ActionResult {
    type Error = InvalidMessage;
    fn try_from(a: v1::ActionResult) -> Result<Self, Self::Error> {
        let outcome = match v1::ActionOutcome::try_from(a.outcome) {
            Ok(v1::ActionOutcome::Succeeded) => ActionOutcome::Succeeded,
            Ok(v1::ActionOutcome::Failed) => ActionOutcome::Failed,
            Ok(v1::ActionOutcome::TimedOut) => ActionOutcome::TimedOut,
            Ok(v1::ActionOutcome::Refused) => ActionOutcome::Refused,
            Ok(v1::ActionOutcome::Unspecified) | Err(_) => {
                return Err(InvalidMessage::new(
                    "action_result.outcome",
                    format!("{} is not an outcome", a.outcome),
                ));
            }
        };
        bounded_text("action_result.output", &a.output, MAX_ACTION_OUTPUT_BYTES)?;
        bounded_text("action_result.reason", &a.reason, MAX_REASON_BYTES)?;
        Ok(ActionResult {
            decision_id: identifier("action_result.decision_id", &a.decision_id)?,
            service: identifier("action_result.service", &a.service)?,
            action: identifier("action_result.action", &a.action)?,
            fencing_token: FencingToken::try_from(a.fencing_token)
                .map_err(|e| InvalidMessage::new(format!("action_result.{}", e.field), e.reason))?,
            outcome,
            exit_code: a.exit_code,
            output: a.output,
            reason: a.reason,
            duration: Duration::from_millis(a.duration_ms),
            replayed: a.replayed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> v1::Hello {
        v1::Hello {
            agent_id: "ww-1".into(),
            version: "0.1.0".into(),
            checks: vec!["uplink".into()],
            actions: vec![],
            report_interval_ms: 1000,
            incarnation: 1,
        }
    }

    fn report() -> v1::Report {
        v1::Report {
            seq: 1,
            observed_at_unix_ms: 1_700_000_000_000,
            host: Some(v1::HostMetrics {
                cpu_utilization: 0.5,
                memory_total_bytes: 10,
                memory_used_bytes: 5,
                ..Default::default()
            }),
            checks: vec![v1::CheckResult {
                name: "uplink".into(),
                status: v1::CheckStatus::Ok as i32,
                summary: "TCP OK".into(),
                observed_at_unix_ms: 1_700_000_000_000,
                duration_us: 120,
                perf: vec![],
            }],
        }
    }

    /// Each case breaks one bound; the error must name the field.
    fn check_hello(edit: impl FnOnce(&mut v1::Hello), field: &str) {
        let mut h = hello();
        edit(&mut h);
        let err = Hello::try_from(h).expect_err("out of bounds");
        assert_eq!(err.field, field, "{err}");
    }

    fn check_report(edit: impl FnOnce(&mut v1::Report), field: &str) {
        let mut r = report();
        edit(&mut r);
        let err = Report::try_from(r).expect_err("out of bounds");
        assert_eq!(err.field, field, "{err}");
    }

    #[test]
    fn valid_messages_pass() {
        let h = Hello::try_from(hello()).expect("valid hello");
        assert_eq!(h.agent_id.as_str(), "ww-1");
        let r = Report::try_from(report()).expect("valid report");
        assert_eq!(r.checks[0].status, CheckStatus::Ok);
    }

    #[test]
    fn hello_bounds() {
        check_hello(|h| h.agent_id = "x".repeat(65), "hello.agent_id");
        check_hello(|h| h.agent_id = "a/b".into(), "hello.agent_id");
        check_hello(|h| h.version = String::new(), "hello.version");
        check_hello(|h| h.checks = vec!["a".into(); 2], "hello.checks[1]");
        check_hello(
            |h| h.actions = (0..257).map(|i| format!("a{i}")).collect(),
            "hello.actions",
        );
        check_hello(|h| h.report_interval_ms = 10, "hello.report_interval_ms");
        check_hello(|h| h.incarnation = 0, "hello.incarnation");
    }

    #[test]
    fn report_bounds() {
        check_report(|r| r.seq = 0, "report.seq");
        check_report(|r| r.observed_at_unix_ms = 0, "report.observed_at_unix_ms");
        check_report(
            |r| r.host.as_mut().expect("host").cpu_utilization = f64::NAN,
            "report.host.cpu_utilization",
        );
        check_report(
            |r| r.host.as_mut().expect("host").memory_used_bytes = 11,
            "report.host.memory_used_bytes",
        );
        check_report(|r| r.checks[0].status = 0, "report.checks[0].status");
        check_report(
            |r| r.checks[0].summary = "x".repeat(1025),
            "report.checks[0].summary",
        );
        check_report(
            |r| r.checks.push(r.checks[0].clone()),
            "report.checks[1].name",
        );
        check_report(
            |r| r.checks = (0..257).map(|_| r.checks[0].clone()).collect(),
            "report.checks",
        );
    }

    /// The names of indexed fields are formatted only for an error: each
    /// must still name the field that broke its bound.
    #[test]
    fn report_bounds_name_indexed_fields() {
        fn host(r: &mut v1::Report) -> &mut v1::HostMetrics {
            r.host.as_mut().expect("host")
        }
        let datum = |label: &str, value: f64| v1::PerfDatum {
            label: label.into(),
            value,
            ..Default::default()
        };
        check_report(
            |r| host(r).cpu_utilization_per_core = vec![0.5, 1.5],
            "report.host.cpu_utilization_per_core[1]",
        );
        check_report(|r| r.checks[0].name = "a b".into(), "report.checks[0].name");
        check_report(
            |r| r.checks[0].observed_at_unix_ms = 0,
            "report.checks[0].observed_at_unix_ms",
        );
        check_report(
            |r| r.checks[0].perf = vec![datum("time", 1.0), datum("", 1.0)],
            "report.checks[0].perf[1].label",
        );
        check_report(
            |r| r.checks[0].perf = vec![datum(&"l".repeat(MAX_PERF_LABEL_BYTES + 1), 1.0)],
            "report.checks[0].perf[0].label",
        );
        check_report(
            |r| r.checks[0].perf = vec![datum("time", f64::INFINITY)],
            "report.checks[0].perf[0]",
        );
        let filesystem = |mountpoint: &str, device: &str| v1::FilesystemUsage {
            mountpoint: mountpoint.into(),
            device: device.into(),
            ..Default::default()
        };
        check_report(
            |r| host(r).filesystems = vec![filesystem("/", "sda1"), filesystem("", "sda2")],
            "report.host.filesystems[1].mountpoint",
        );
        check_report(
            |r| host(r).filesystems = vec![filesystem("/", &"d".repeat(MAX_DEVICE_BYTES + 1))],
            "report.host.filesystems[0].device",
        );
        check_report(
            |r| {
                host(r).network_interfaces = vec![v1::NetworkInterface::default()];
            },
            "report.host.network_interfaces[0].name",
        );
        check_report(
            |r| {
                host(r).temperatures = vec![v1::Temperature {
                    sensor: "cpu".into(),
                    celsius: 2000.0,
                }];
            },
            "report.host.temperatures[0].celsius",
        );
    }
}
