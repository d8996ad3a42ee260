//! Incidents: one per Alertmanager group and receiver while it fires, with an
//! id (`INC-0001`), a severity (the worst of its runbooks), the affected
//! services, its alerts, runs and a timeline.
//!
//! Status: `investigating` when opened → `identified` when a runbook starts →
//! `monitoring` when all its runs succeeded and left no checklist item for
//! people → `resolved` when Alertmanager reports every alert resolved. A
//! failed run keeps it (or puts it back to) `investigating` and marks it
//! `run_failed`; `escalated` says only that an escalation timer fired.
//! People add updates with an optional status and root cause.

pub mod notices;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::alert::Labels;

/// Lifecycle status of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

impl IncidentStatus {
    pub const ALL: [IncidentStatus; 4] = [
        IncidentStatus::Investigating,
        IncidentStatus::Identified,
        IncidentStatus::Monitoring,
        IncidentStatus::Resolved,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

impl FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "investigating" => Ok(IncidentStatus::Investigating),
            "identified" => Ok(IncidentStatus::Identified),
            "monitoring" => Ok(IncidentStatus::Monitoring),
            "resolved" => Ok(IncidentStatus::Resolved),
            _ => Err(format!("unknown incident status `{s}`: expected investigating, identified, monitoring or resolved")),
        }
    }
}

/// The labels that say what an alert is about, in order of preference: an
/// incident row and the incident page show the first one an alert has.
pub const SUBJECT_LABELS: &[&str] = &["instance", "pod", "service", "job", "node", "cluster"];

/// The labels of an Alertmanager `groupKey` (`{}/{…}:{alertname="A",
/// unit="x"}`: the group's labels are its last `{…}`), besides `alertname`,
/// as `unit=x`; `None` when it has none (a receiver that does not group).
#[must_use]
pub fn grouped_by(group_key: &str) -> Option<String> {
    let inner = group_key.strip_suffix('}')?;
    let start = inner
        .rfind(":{")
        .map(|i| i + 2)
        .or_else(|| inner.starts_with('{').then_some(1))?;
    let body = &inner[start..];
    let mut out = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if name.trim() != "alertname" {
            out.push(format!("{}={value}", name.trim()));
        }
        rest = after[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    (!out.is_empty()).then(|| out.join(", "))
}

/// What an alert is about: the value of the first of [`SUBJECT_LABELS`] its
/// labels have.
#[must_use]
pub fn subject_of(labels: &crate::alert::Labels) -> Option<&str> {
    SUBJECT_LABELS
        .iter()
        .find_map(|l| labels.get(*l).map(String::as_str).filter(|v| !v.is_empty()))
}

/// Where a run is: waiting, executing, or how it ended. Stored as its
/// snake_case name; the API shows the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    /// Paused on an approval step: waits for a decision, holding no slot.
    AwaitingApproval,
    Succeeded,
    SucceededWithFailures,
    Failed,
    TimedOut,
    Cancelled,
    /// runbookd stopped (or died) while the run executed.
    Interrupted,
    /// Not started: the runbook's cooldown.
    Skipped,
    /// Shadow mode: the plan was recorded, nothing executed.
    Planned,
}

impl RunState {
    pub const ALL: [RunState; 11] = [
        RunState::Queued,
        RunState::Running,
        RunState::AwaitingApproval,
        RunState::Succeeded,
        RunState::SucceededWithFailures,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Cancelled,
        RunState::Interrupted,
        RunState::Skipped,
        RunState::Planned,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Succeeded => "succeeded",
            RunState::SucceededWithFailures => "succeeded_with_failures",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
            RunState::Skipped => "skipped",
            RunState::Planned => "planned",
        }
    }

    /// The words people read (`succeeded with failures`).
    #[must_use]
    pub fn words(self) -> String {
        self.as_str().replace('_', " ")
    }

    /// Still to run, running, or waiting for approval.
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Queued | RunState::Running | RunState::AwaitingApproval
        )
    }

    /// A remediation run that leaves its incident nothing to fix: it
    /// succeeded (maybe with failures it tolerated), or never had to run.
    #[must_use]
    pub fn settled(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::SucceededWithFailures
                | RunState::Skipped
                | RunState::Cancelled
        )
    }

    /// Ended in a way that needs nobody's attention.
    #[must_use]
    pub fn is_quiet(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Skipped | RunState::Planned | RunState::Cancelled
        )
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown run state `{s}`"))
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which incidents a list shows: `open` (any status but resolved) or one
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StatusFilter {
    Open,
    Is(IncidentStatus),
}

impl FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "open" {
            return Ok(StatusFilter::Open);
        }
        s.parse().map(StatusFilter::Is).map_err(|_| {
            format!("unknown incident status `{s}`: expected open, investigating, identified, monitoring or resolved")
        })
    }
}

impl StatusFilter {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Open => "open",
            StatusFilter::Is(s) => s.as_str(),
        }
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for StatusFilter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::ids::RunId;

/// `INC-0042`, stored as the number 42.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentId(pub i64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INC-{:04}", self.0)
    }
}

impl FromStr for IncidentId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s
            .strip_prefix("INC-")
            .or_else(|| s.strip_prefix("inc-"))
            .unwrap_or(s);
        digits
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(IncidentId)
            .ok_or_else(|| format!("bad incident id `{s}`: expected e.g. INC-0042"))
    }
}

impl<'de> serde::Deserialize<'de> for IncidentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for IncidentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An incident as listed.
#[derive(Debug, Clone, Serialize)]
#[allow(clippy::struct_excessive_bools)] // independent facts about the incident
pub struct IncidentSummary {
    pub id: IncidentId,
    pub title: String,
    pub severity: crate::runbook::Severity,
    pub status: IncidentStatus,
    /// An escalation timer fired (nobody acknowledged or resolved in time).
    pub escalated: bool,
    /// A remediation run failed: people must act.
    pub run_failed: bool,
    pub services: Vec<String>,
    pub runbooks: Vec<String>,
    pub receiver: String,
    pub group_key: String,
    /// Recorded in shadow mode (`serve --plan`): nothing was executed.
    pub shadow: bool,
    /// A drill's incident (receiver `runbookd-drill`): closed when the
    /// drill's run ends, never counted as open.
    pub drill: bool,
    pub created_at: crate::timestamp::Timestamp,
    pub updated_at: crate::timestamp::Timestamp,
    /// When the resolved notification arrived.
    pub resolved_at: Option<crate::timestamp::Timestamp>,
    /// When the alerts ended, as Alertmanager reported (their latest
    /// `endsAt`); MTTR is measured to this.
    pub alerts_ended_at: Option<crate::timestamp::Timestamp>,
    /// From opening to `alerts_ended_at` (the incident's time to recover).
    pub recovered_seconds: Option<i64>,
    /// Its alerts, and how many of them are firing.
    pub alert_count: i64,
    pub firing_count: i64,
    /// What the first alert is about: its `instance`, `pod`, `service`,
    /// `job`, `node` or `cluster` label, the first that it has.
    pub subject: Option<String>,
    /// Seconds from opening to resolution, or to now while open.
    pub duration_seconds: i64,
    /// Who acknowledged the incident, and when.
    pub acknowledged_at: Option<crate::timestamp::Timestamp>,
    pub acknowledged_by: Option<String>,
    /// The person leading the incident: the first to acknowledge it, then
    /// whoever it was handed to.
    pub commander: Option<String>,
    /// Runs of it paused on an approval step: someone must decide.
    pub awaiting_approval: i64,
    /// The labels Alertmanager grouped it by besides `alertname` (its
    /// `groupKey`'s), `unit=nginx.service, instance=web-1`: what tells it
    /// from other incidents of the same alert.
    pub grouped_by: Option<String>,
    /// It spent error budget (recorded once it resolved), or, while that
    /// is not known or its services have no SLO, it is sev1 or sev2.
    pub slo_affecting: bool,
    /// What it cost its services' SLOs, as recorded once it resolved
    /// (JSON; `None` until then). Shown through the API's `slo_budget`.
    #[serde(skip)]
    pub slo_budget: Option<String>,
    /// Why a policy over what it cost requires its postmortem
    /// (`require_postmortem`); `None`: not required.
    pub postmortem_required: Option<String>,
}

/// One alert of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub fingerprint: String,
    pub status: crate::alert::Status,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: String,
    pub generator_url: String,
}

/// One run of a runbook within an incident.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub runbook: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub phase: crate::plan::Phase,
    pub state: RunState,
    pub reason: Option<String>,
    pub queued_at: crate::timestamp::Timestamp,
    pub started_at: Option<crate::timestamp::Timestamp>,
    pub ended_at: Option<crate::timestamp::Timestamp>,
    /// The run's record: every step's rendered command, output, outcome and timings.
    pub result: Option<RunDetail>,
    /// Output received so far from the step that is running.
    pub live_output: Vec<OutputChunk>,
    /// A re-run: the first run of what it re-runs (a re-run takes that
    /// run's place on its incident).
    pub rerun_of: Option<RunId>,
}

/// What a finished run recorded: what it executed, or in shadow mode what
/// it would have executed. Stored as JSON; read back typed (a record this
/// runbookd cannot read is an error, never a guess).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RunDetail {
    /// Shadow mode (`serve --plan`): `{"shadow": true, "plan": …}`.
    Planned {
        shadow: bool,
        plan: Option<Box<crate::plan::RunPlan>>,
    },
    Executed(Box<crate::record::RunResult>),
}

impl RunDetail {
    /// Each step: its rendered plan and, when it ran, its record (a shadow
    /// run's steps were planned, not run).
    #[must_use]
    pub fn steps(
        &self,
    ) -> Box<dyn Iterator<Item = (&crate::plan::StepPlan, Option<&crate::record::StepRecord>)> + '_>
    {
        match self {
            RunDetail::Executed(r) => Box::new(r.steps.iter().map(|s| (&s.plan, Some(s)))),
            RunDetail::Planned { plan, .. } => {
                Box::new(plan.iter().flat_map(|p| p.steps.iter()).map(|p| (p, None)))
            }
        }
    }

    /// Manual steps reached (checklist items; people tick them).
    pub fn open_checklist(&self) -> impl Iterator<Item = &crate::record::StepRecord> {
        let steps = match self {
            RunDetail::Executed(r) => r.steps.as_slice(),
            RunDetail::Planned { .. } => &[],
        };
        steps
            .iter()
            .filter(|s| s.outcome.is_none() && s.plan.kind() == crate::runbook::StepKind::Manual)
    }
}

/// A piece of output of a running step.
#[derive(Debug, Clone, Serialize)]
pub struct OutputChunk {
    pub seq: i64,
    /// Position in the incident's live stream (`GET …/events?after=`).
    pub cursor: i64,
    pub step: String,
    pub stream: String,
    pub text: String,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: crate::timestamp::Timestamp,
    pub author: String,
    pub kind: String,
    pub message: String,
    pub status: Option<IncidentStatus>,
}

/// Everything recorded about an incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub summary: IncidentSummary,
    pub root_cause: Option<String>,
    pub alerts: Vec<AlertRecord>,
    pub runs: Vec<RunRecord>,
    pub timeline: Vec<TimelineEntry>,
    /// Manual steps reached by runs: open checklist items.
    pub checklist: Vec<ChecklistItem>,
    /// What people were told (or, in shadow mode, would have been).
    pub notifications: Vec<crate::incident::notices::MessageRecord>,
    pub escalations: Vec<crate::incident::notices::EscalationRecord>,
    /// Approval steps its runs reached: pending ones wait for an operator.
    pub approvals: Vec<crate::approval::Approval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChecklistItem {
    pub run_id: RunId,
    pub runbook: String,
    pub step: String,
    pub text: String,
    /// Who ticked it, and when; `None` while it is open.
    pub done_by: Option<String>,
    pub done_at: Option<crate::timestamp::Timestamp>,
}

impl ChecklistItem {
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.done_by.is_none()
    }
}

/// A person's update to an incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Who: with `auth.users`, the signed-in operator (whatever the request says).
    #[serde(default)]
    pub author: String,
    pub message: String,
    pub status: Option<IncidentStatus>,
    pub root_cause: Option<String>,
}

impl Update {
    /// # Errors
    /// An empty author or message, or overlong fields.
    pub fn check(&self) -> Result<(), String> {
        if self.author.trim().is_empty() {
            return Err("`author` must not be empty".into());
        }
        if self.message.trim().is_empty() {
            return Err("`message` must not be empty".into());
        }
        if self.author.len() > 200
            || self.message.len() > 64 * 1024
            || self
                .root_cause
                .as_ref()
                .is_some_and(|r| r.len() > 64 * 1024)
        {
            return Err(
                "`author` is limited to 200 bytes, `message` and `root_cause` to 64 KiB".into(),
            );
        }
        Ok(())
    }
}

/// A silence a run made, as the store keeps it from the moment it is made:
/// what is needed to expire it (whoever finds its run ended) and, for an
/// `until: resolved` one, to ask Alertmanager about its alert and record
/// the alert's resolution in its incident's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSilence {
    /// Alertmanager's silence id.
    pub id: String,
    pub run_id: i64,
    pub incident: IncidentId,
    /// The incident's Alertmanager group.
    pub receiver: String,
    pub group_key: String,
    /// The run's alert, as its incident holds it.
    pub alert: crate::alert::Alert,
    pub until: crate::runbook::Until,
    /// See `crate::alertmanager::Silenced::watched`.
    pub watched: bool,
    /// The Alertmanager it was made in (its URL; empty in stores from
    /// before this was recorded: the configured one): a reload may point
    /// runbookd at another, and the silence is expired where it is.
    pub alertmanager: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_keys_labels_tell_incidents_of_one_alert_apart() {
        assert_eq!(
            grouped_by(r#"{}:{alertname="UnitDown", instance="web-1", unit="nginx.service"}"#)
                .as_deref(),
            Some("instance=web-1, unit=nginx.service")
        );
        assert_eq!(
            grouped_by(r#"{}/{team="a"}:{alertname="X", path="a\"b, c"}"#).as_deref(),
            Some(r#"path=a"b, c"#)
        );
        assert_eq!(grouped_by(r#"{}:{alertname="DiskFull"}"#), None);
        assert_eq!(grouped_by("{}:{}"), None);
        assert_eq!(grouped_by("g-1"), None, "a hand-written key");
        assert_eq!(grouped_by(r#"{}:{broken="x}"#), None);
    }

    #[test]
    fn ids_print_and_parse() {
        assert_eq!(IncidentId(1).to_string(), "INC-0001");
        assert_eq!(IncidentId(12345).to_string(), "INC-12345");
        assert_eq!("INC-0042".parse::<IncidentId>(), Ok(IncidentId(42)));
        assert_eq!("42".parse::<IncidentId>(), Ok(IncidentId(42)));
        assert!("INC-0".parse::<IncidentId>().is_err());
        assert!("INC-x".parse::<IncidentId>().is_err());
    }
}

#[cfg(test)]
mod run_state_tests {
    use super::RunState;

    #[test]
    fn run_states_are_stored_and_shown_by_one_name() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().to_owned())
            );
            assert_eq!(s.words(), s.as_str().replace('_', " "));
        }
        assert!("exploded".parse::<RunState>().is_err());
        assert!(RunState::Queued.is_active() && RunState::Running.is_active());
        assert!(!RunState::Failed.is_quiet() && RunState::Succeeded.is_quiet());
    }
}
