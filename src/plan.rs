//! alert(s) + runbooks → the exact plan: which runbooks run for which alert,
//! and every step fully rendered (argv, final shell script, env, limits).
//!
//! `runbookd run --plan`, `POST /api/v1/plan` and shadow mode show a [`Plan`];
//! execution renders each step with the same [`render_step`], so what the plan
//! shows is what runs. A template that reads `steps.*` (an earlier step's
//! result) cannot be known in advance: the plan marks it `deferred` and shows
//! its template, and execution renders it when the earlier steps have run.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::alert::{Alert, Labels, Notification, Status, Timestamp};
pub use crate::runbook::{StepKind, REDACTED};
use std::time::Duration;

use crate::matcher::{MatchOp, Matcher};
use crate::runbook::verify::{BurnRate, Condition, Inconclusive};
use crate::runbook::OnTimeout;
use crate::runbook::{Action, EnvValue, Runbook, RunbookSet, Secret, Severity, Step};
use crate::template::{Data, Template};

/// The kernel's limit on one environment string (`NAME=value`), MAX_ARG_STRLEN.
pub const MAX_ENV_STRING: usize = 32 * 4096;

/// How much argv and environment together a step may get; the kernel allows
/// a quarter of the stack limit (2 MiB with the usual 8 MiB), so this leaves
/// room whatever the host's setting.
pub const MAX_EXEC_BYTES: usize = 1 << 20;

/// Identifies the JSON layout of a plan; bumped on incompatible changes.
pub const PLAN_FORMAT: &str = "runbookd.plan/v1";

/// The incident id shown in a plan made outside the server.
pub const PLAN_INCIDENT_ID: &str = "INC-PLAN";

/// What would run for one notification.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format: &'static str,
    pub receiver: String,
    pub group_key: String,
    pub status: Status,
    /// The incident this notification belongs to: its id and severity (the
    /// worst of the matched runbooks); `None` when no runbook matches.
    pub incident: Option<IncidentRef>,
    pub alerts: Vec<AlertPlan>,
}

/// The incident data templates see as `incident.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentRef {
    pub id: String,
    pub severity: Severity,
}

/// One alert and the runs it starts (none when no runbook matches).
#[derive(Debug, Clone, Serialize)]
pub struct AlertPlan {
    pub fingerprint: String,
    pub status: Status,
    pub labels: Labels,
    pub starts_at: Timestamp,
    pub runs: Vec<RunPlan>,
}

/// Why a run happens: remediation for a firing alert, `on_resolved` for a resolved one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Remediation,
    Resolution,
}

impl Phase {
    pub const ALL: [Phase; 2] = [Phase::Remediation, Phase::Resolution];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Remediation => "remediation",
            Phase::Resolution => "resolution",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "remediation" => Ok(Phase::Remediation),
            "resolution" => Ok(Phase::Resolution),
            other => Err(format!("unknown run phase `{other}`")),
        }
    }
}

/// One runbook for one alert. `key` is unique: a notification resent by
/// Alertmanager maps to the same key and never starts a second run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunPlan {
    pub runbook: String,
    pub title: String,
    pub severity: Severity,
    pub source: String,
    pub phase: Phase,
    pub key: RunKey,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub cooldown_ms: u64,
    pub cancel_on_resolved: bool,
    #[serde(default)]
    pub idempotent: bool,
    /// The runbook's `run_as`, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// The runbook's own error-budget gate (`requires`/`risk` on the
    /// runbook), asked before its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GatePlan>,
    pub steps: Vec<StepPlan>,
    pub on_failure: Vec<StepPlan>,
    /// Who is told what (`communication:`, `escalation:`); a plan sends nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<PlannedNotice>,
}

/// A notification rule of a planned run: on which events, or after how long
/// unless what, which notifiers hear of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PlannedNotice {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<crate::runbook::notify::Event>,
    /// Escalations: after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<crate::runbook::notify::Unless>,
    pub notify: Vec<String>,
    /// The message template, when the rule has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PlannedNotice {
    /// `slack-ops on incident_opened, run_failed` / `pd after 15m unless acknowledged`.
    #[must_use]
    pub fn describe(&self) -> String {
        let when = if let Some(ms) = self.after_ms {
            {
                let unless: Vec<&str> = self.unless.iter().map(|u| u.as_str()).collect();
                format!(
                    "after {}{}",
                    humantime::format_duration(std::time::Duration::from_millis(ms)),
                    if unless.is_empty() {
                        String::new()
                    } else {
                        format!(" unless {}", unless.join(" or "))
                    }
                )
            }
        } else {
            let on: Vec<&str> = self.on.iter().map(|e| e.as_str()).collect();
            format!("on {}", on.join(", "))
        };
        format!("{} {when}", self.notify.join(", "))
    }
}

fn planned_notices(p: &crate::runbook::notify::Policy) -> Vec<PlannedNotice> {
    let talk = p.communication.iter().map(|c| PlannedNotice {
        on: c.on.clone(),
        after_ms: None,
        unless: Vec::new(),
        notify: c.notify.clone(),
        message: c.message.clone(),
    });
    let escalate = p.escalation.iter().map(|e| PlannedNotice {
        on: Vec::new(),
        after_ms: Some(millis(e.after)),
        unless: e.unless.clone(),
        notify: e.notify.clone(),
        message: e.message.clone(),
    });
    talk.chain(escalate).collect()
}

/// (runbook, fingerprint, startsAt): the identity of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct RunKey {
    pub runbook: String,
    pub fingerprint: String,
    pub starts_at: Timestamp,
}

/// One step, rendered: what it does ([`ActionPlan`], one variant per step
/// kind, so that a new kind is met by every `match` on it) and the settings
/// every step has. Serialized flat, as `--plan --json` and the stored run
/// records have always written it ([`StepPlanWire`], docs/plan-json.md).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "StepPlanWire<'static>")]
pub struct StepPlan {
    pub name: String,
    pub action: ActionPlan,
    /// What people read: the rendered checklist text of a manual step; for
    /// a silence, approval or verify step, what it does in words.
    pub text: Option<String>,
    /// Rendered only at run time because it reads an earlier step's result.
    pub deferred: bool,
    /// The templates, for a deferred step (argv elements, or the one script/text).
    pub templates: Option<Vec<String>>,
    /// Variables the step gets besides PATH, LANG, HOME and TMPDIR (and a
    /// shell step's `vars`); secrets show as `[redacted]`.
    pub env: BTreeMap<String, String>,
    /// Variables whose values are secrets, read when the step starts.
    pub secrets: BTreeMap<String, Secret>,
    pub timeout_ms: u64,
    pub retries: u32,
    pub retry_delay_ms: u64,
    pub continue_on_failure: bool,
    pub when: Option<WhenPlan>,
    /// Things left out or worth knowing (an alert value that cannot be
    /// passed to a program, say); the step still runs.
    pub warnings: Vec<String>,
    /// Why this step cannot be rendered for this alert; it would fail.
    pub error: Option<String>,
    /// `requires: {budget: …}` / `risk: high`: the service whose
    /// error-budget gate the step asks before it runs.
    pub gate: Option<GatePlan>,
    /// What a frozen gate (the step's or its runbook's, `on_frozen:
    /// approve`) asks operators before the step may run.
    pub frozen_approval: Option<ApprovalPlan>,
}

/// What a step does, rendered for the alert.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionPlan {
    /// The rendered `run:` list (`None`: deferred, or it could not be
    /// rendered).
    Run { argv: Option<Vec<String>> },
    /// The rendered script (`None` as for `Run`): the template's text with
    /// each value replaced by a reference to a variable of `vars`, which
    /// the step gets with their values.
    Shell {
        script: Option<String>,
        vars: BTreeMap<String, String>,
    },
    /// A checklist item: its text is the step's `text`.
    Manual,
    /// The silence it makes (`None`: deferred, or it could not be rendered).
    Silence(Option<SilencePlan>),
    /// What operators are asked, and the timeout.
    Approve(ApprovalPlan),
    /// The rendered query and its conditions.
    Verify(VerifyPlan),
}

impl ActionPlan {
    #[must_use]
    pub fn kind(&self) -> StepKind {
        match self {
            ActionPlan::Run { .. } => StepKind::Run,
            ActionPlan::Shell { .. } => StepKind::Shell,
            ActionPlan::Manual => StepKind::Manual,
            ActionPlan::Silence(_) => StepKind::Silence,
            ActionPlan::Approve(_) => StepKind::Approve,
            ActionPlan::Verify(_) => StepKind::Verify,
        }
    }
}

/// A [`StepPlan`] as JSON has it: every field of every kind side by side
/// (docs/plan-json.md). Written from borrowed fields (a run's steps are
/// written at every progress flush: nothing is cloned), read into owned
/// ones and converted.
#[derive(Serialize, serde::Deserialize)]
pub struct StepPlanWire<'a> {
    name: Cow<'a, str>,
    kind: StepKind,
    argv: Option<Vec<String>>,
    script: Option<Cow<'a, str>>,
    #[serde(default)]
    vars: Cow<'a, BTreeMap<String, String>>,
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    deferred: bool,
    templates: Option<Cow<'a, [String]>>,
    #[serde(default)]
    env: Cow<'a, BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: Cow<'a, BTreeMap<String, Secret>>,
    timeout_ms: u64,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    retry_delay_ms: u64,
    #[serde(default)]
    continue_on_failure: bool,
    when: Option<Cow<'a, WhenPlan>>,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    warnings: Cow<'a, [String]>,
    error: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    silence: Option<Cow<'a, SilencePlan>>,
    /// An approval step's own; on any other step, what its frozen gate asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approval: Option<Cow<'a, ApprovalPlan>>,
    /// An approval step's frozen gate's question (asked before its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frozen_approval: Option<Cow<'a, ApprovalPlan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verify: Option<Cow<'a, VerifyPlan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate: Option<Cow<'a, GatePlan>>,
}

impl Serialize for StepPlan {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        static NO_VARS: BTreeMap<String, String> = BTreeMap::new();
        let (mut script, mut vars, mut silence, mut verify) = (None, &NO_VARS, None, None);
        match &self.action {
            ActionPlan::Run { .. } | ActionPlan::Manual | ActionPlan::Approve(_) => {}
            ActionPlan::Shell { script: s, vars: v } => (script, vars) = (s.as_deref(), v),
            ActionPlan::Silence(s) => silence = s.as_ref(),
            ActionPlan::Verify(v) => verify = Some(v),
        }
        StepPlanWire {
            name: Cow::Borrowed(&self.name),
            kind: self.kind(),
            argv: self.argv(),
            script: script.map(Cow::Borrowed),
            vars: Cow::Borrowed(vars),
            text: self.text.as_deref().map(Cow::Borrowed),
            deferred: self.deferred,
            templates: self.templates.as_deref().map(Cow::Borrowed),
            env: Cow::Borrowed(&self.env),
            secrets: Cow::Borrowed(&self.secrets),
            timeout_ms: self.timeout_ms,
            retries: self.retries,
            retry_delay_ms: self.retry_delay_ms,
            continue_on_failure: self.continue_on_failure,
            when: self.when.as_ref().map(Cow::Borrowed),
            warnings: Cow::Borrowed(&self.warnings),
            error: self.error.as_deref().map(Cow::Borrowed),
            silence: silence.map(Cow::Borrowed),
            // On any step but an approval step, the frozen gate's question
            // is written as `approval`, as it always was.
            approval: match &self.action {
                ActionPlan::Approve(own) => Some(Cow::Borrowed(own)),
                _ => self.frozen_approval.as_ref().map(Cow::Borrowed),
            },
            frozen_approval: match &self.action {
                ActionPlan::Approve(_) => self.frozen_approval.as_ref().map(Cow::Borrowed),
                _ => None,
            },
            verify: verify.map(Cow::Borrowed),
            gate: self.gate.as_ref().map(Cow::Borrowed),
        }
        .serialize(ser)
    }
}

impl TryFrom<StepPlanWire<'static>> for StepPlan {
    type Error = String;

    fn try_from(w: StepPlanWire<'static>) -> Result<Self, String> {
        let own = |c: Option<Cow<'static, str>>| c.map(Cow::into_owned);
        let name = w.name.into_owned();
        let approval = w.approval.map(Cow::into_owned);
        let frozen = w.frozen_approval.map(Cow::into_owned);
        let (action, frozen_approval) = match w.kind {
            StepKind::Run => (ActionPlan::Run { argv: w.argv }, approval),
            StepKind::Shell => (
                ActionPlan::Shell {
                    script: own(w.script),
                    vars: w.vars.into_owned(),
                },
                approval,
            ),
            StepKind::Manual => (ActionPlan::Manual, approval),
            StepKind::Silence => (
                ActionPlan::Silence(w.silence.map(Cow::into_owned)),
                approval,
            ),
            StepKind::Approve => (
                ActionPlan::Approve(
                    approval
                        .ok_or_else(|| format!("approval step `{name}` without its `approval`"))?,
                ),
                frozen,
            ),
            StepKind::Verify => (
                ActionPlan::Verify(
                    w.verify
                        .map(Cow::into_owned)
                        .ok_or_else(|| format!("verify step `{name}` without its `verify`"))?,
                ),
                approval,
            ),
        };
        Ok(StepPlan {
            name,
            action,
            text: own(w.text),
            deferred: w.deferred,
            templates: w.templates.map(Cow::into_owned),
            env: w.env.into_owned(),
            secrets: w.secrets.into_owned(),
            timeout_ms: w.timeout_ms,
            retries: w.retries,
            retry_delay_ms: w.retry_delay_ms,
            continue_on_failure: w.continue_on_failure,
            when: w.when.map(Cow::into_owned),
            warnings: w.warnings.into_owned(),
            error: own(w.error),
            gate: w.gate.map(Cow::into_owned),
            frozen_approval,
        })
    }
}

/// The gate a step asks, rendered for the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GatePlan {
    /// The service (empty: the alert has no such label, and no gate is asked).
    pub service: String,
    pub on_frozen: crate::runbook::OnFrozen,
}

/// The Alertmanager silence a `silence:` step makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SilencePlan {
    pub matchers: Vec<crate::plan::ApiMatcher>,
    pub duration_ms: u64,
    /// The rendered comment (runbookd adds the incident, run and step).
    pub comment: String,
    pub until: crate::runbook::Until,
    /// The fingerprint of the alert the run is about (its labels, without
    /// runbookd's own mark on manual runs and drills): the silence may not
    /// cover any other alert Alertmanager holds, unless `covers_others`.
    #[serde(default)]
    pub alert: String,
    #[serde(default)]
    pub covers_others: bool,
}

impl StepPlan {
    #[must_use]
    pub fn kind(&self) -> StepKind {
        self.action.kind()
    }

    /// The exact argv executed: the rendered `run:` list, or `["/bin/sh",
    /// "-c", script]`. `None` for the other kinds and for deferred or
    /// broken steps.
    #[must_use]
    pub fn argv(&self) -> Option<Vec<String>> {
        match &self.action {
            ActionPlan::Run { argv } => argv.clone(),
            ActionPlan::Shell { script, .. } => script
                .as_ref()
                .map(|s| vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()]),
            ActionPlan::Manual
            | ActionPlan::Silence(_)
            | ActionPlan::Approve(_)
            | ActionPlan::Verify(_) => None,
        }
    }

    /// What the run waits on before going on past this step: its frozen
    /// gate's question, or an approval step's own.
    #[must_use]
    pub fn asks(&self) -> Option<&ApprovalPlan> {
        match (&self.frozen_approval, &self.action) {
            (Some(a), _) | (None, ActionPlan::Approve(a)) => Some(a),
            (None, _) => None,
        }
    }

    /// The command as a person would type it (the script of a shell step,
    /// the argv of a run step quoted for display); `None` for the other
    /// kinds and for a deferred step.
    #[must_use]
    pub fn command_line(&self) -> Option<String> {
        match &self.action {
            ActionPlan::Shell { script, .. } => script.clone(),
            ActionPlan::Run { argv } => argv.as_ref().map(|argv| {
                argv.iter()
                    .map(|w| crate::runbook::shell_word(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            ActionPlan::Manual
            | ActionPlan::Silence(_)
            | ActionPlan::Approve(_)
            | ActionPlan::Verify(_) => None,
        }
    }
}

/// A step's `when` condition and what it decided.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WhenPlan {
    pub template: String,
    /// `run`, `skip`, or `at_run_time` when it reads an earlier step's result.
    pub decision: WhenDecision,
    pub rendered: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenDecision {
    Run,
    Skip,
    AtRunTime,
}

impl Plan {
    /// Plans a notification against a runbook set. `incident_id` is the id
    /// templates see as `incident.id` ([`PLAN_INCIDENT_ID`] outside the server).
    #[must_use]
    pub fn build(n: &Notification, set: &RunbookSet, incident_id: &str) -> Plan {
        let matched: Vec<(&Alert, Vec<&std::sync::Arc<Runbook>>)> = n
            .alerts
            .iter()
            .map(|a| (a, set.matching(&a.labels)))
            .collect();
        Self::of(n, matched, incident_id)
    }

    /// The plan of a manual run: every alert runs `rb`, whatever its matchers.
    #[must_use]
    pub fn manual(n: &Notification, rb: &std::sync::Arc<Runbook>, incident_id: &str) -> Plan {
        let matched = n.alerts.iter().map(|a| (a, vec![rb])).collect();
        Self::of(n, matched, incident_id)
    }

    fn of(
        n: &Notification,
        matched: Vec<(&Alert, Vec<&std::sync::Arc<Runbook>>)>,
        incident_id: &str,
    ) -> Plan {
        let severity = matched
            .iter()
            .flat_map(|(_, rbs)| rbs.iter().map(|r| r.severity))
            .min();
        let incident = severity.map(|severity| IncidentRef {
            id: incident_id.to_owned(),
            severity,
        });
        let alerts = matched
            .into_iter()
            .map(|(alert, runbooks)| AlertPlan {
                fingerprint: alert.fingerprint.clone(),
                status: alert.status,
                labels: alert.labels.clone(),
                starts_at: alert.starts_at,
                runs: incident
                    .as_ref()
                    .map(|inc| {
                        runbooks
                            .iter()
                            .map(|rb| plan_run(n, alert, rb, inc))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Plan {
            format: PLAN_FORMAT,
            receiver: n.receiver.clone(),
            group_key: n.group_key.clone(),
            status: n.status,
            incident,
            alerts,
        }
    }

    /// Every step of every run, main and `on_failure`.
    pub fn steps(&self) -> impl Iterator<Item = &StepPlan> {
        self.alerts
            .iter()
            .flat_map(|a| a.runs.iter())
            .flat_map(|r| r.steps.iter().chain(&r.on_failure))
    }
}

fn plan_run(n: &Notification, alert: &Alert, rb: &Runbook, incident: &IncidentRef) -> RunPlan {
    let data = context(n, alert, rb, incident, None);
    let base_env = base_env(alert, rb, incident, &data);
    let phase = if alert.status == Status::Firing {
        Phase::Remediation
    } else {
        Phase::Resolution
    };
    let render = |steps: &[Step]| {
        steps
            .iter()
            .map(|s| render_step(s, &data, &base_env))
            .collect()
    };
    let (steps, on_failure) = match phase {
        // Remediation never runs for a resolved alert.
        Phase::Remediation => (render(&rb.steps), render(&rb.on_failure)),
        Phase::Resolution => (render(&rb.on_resolved), Vec::new()),
    };
    RunPlan {
        runbook: rb.name.clone(),
        title: rb.title.clone(),
        severity: rb.severity,
        source: rb.source.display().to_string(),
        phase,
        key: RunKey {
            runbook: rb.name.clone(),
            fingerprint: alert.fingerprint.clone(),
            starts_at: alert.starts_at,
        },
        timeout_ms: millis(rb.timeout),
        concurrency: rb.concurrency,
        cooldown_ms: millis(rb.cooldown),
        cancel_on_resolved: rb.cancel_on_resolved,
        idempotent: rb.idempotent,
        run_as: rb.run_as.clone(),
        gate: run_gate(rb, phase, &data),
        steps,
        on_failure,
        notifications: planned_notices(&rb.policy),
    }
}

/// The runbook's own gate for a run, rendered for its alert (remediation
/// only; `None` also when the service renders empty: no gate is asked).
#[must_use]
pub fn run_gate(rb: &Runbook, phase: Phase, data: &Data) -> Option<GatePlan> {
    let g = rb.gate.as_ref().filter(|_| phase == Phase::Remediation)?;
    let service = g.service.render(data).ok()?.trim().to_owned();
    (!service.is_empty()).then_some(GatePlan {
        service,
        on_frozen: g.on_frozen,
    })
}

/// A duration in whole milliseconds, saturating.
#[must_use]
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The template context of DESIGN §3. `steps` holds the results of the steps
/// run so far (`status`, `exit_code`, `stdout`), `None` when planning.
#[must_use]
pub fn context(
    n: &Notification,
    alert: &Alert,
    rb: &Runbook,
    incident: &IncidentRef,
    steps: Option<Map<String, Value>>,
) -> Data {
    let mut v = json!({
        "alert": alert,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "group": {
            "groupKey": n.group_key,
            "receiver": n.receiver,
            "status": n.status,
            "groupLabels": n.group_labels,
            "commonLabels": n.common_labels,
            "commonAnnotations": n.common_annotations,
            "externalURL": n.external_url,
            "truncatedAlerts": n.truncated_alerts,
        },
        "incident": incident,
        "runbook": {"name": rb.name, "title": rb.title, "severity": rb.severity},
    });
    if let Some(steps) = steps {
        v["steps"] = Value::Object(steps);
    }
    Data::new(v)
}

/// `ALERT_LABEL_x` style name: upper-cased, anything but A-Z0-9 → `_`.
#[must_use]
pub fn env_name(prefix: &str, name: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + name.len());
    s.push_str(prefix);
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// The variables every step of a run gets: `ALERT_*`, `INCIDENT_ID`,
/// `RUNBOOK`, then the runbook's `env:` (rendered; secrets redacted and
/// listed).
#[derive(Debug, Clone, Default)]
pub struct BaseEnv {
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
}

/// The base environment of a run's steps.
///
/// # Errors
/// When a runbook `env:` value cannot be rendered for this alert.
pub fn base_env(
    alert: &Alert,
    rb: &Runbook,
    incident: &IncidentRef,
    data: &Data,
) -> Result<BaseEnv, String> {
    let mut out = BaseEnv::default();
    let env = &mut out.env;
    for (k, v) in &alert.labels {
        env.insert(env_name("ALERT_LABEL_", k), v.clone());
    }
    for (k, v) in &alert.annotations {
        env.insert(env_name("ALERT_ANNOTATION_", k), v.clone());
    }
    env.insert("ALERT_STATUS".to_owned(), alert.status.to_string());
    env.insert("ALERT_FINGERPRINT".to_owned(), alert.fingerprint.clone());
    env.insert("INCIDENT_ID".to_owned(), incident.id.clone());
    env.insert("RUNBOOK".to_owned(), rb.name.clone());
    for (k, v) in &rb.env {
        match v {
            EnvValue::Template(t) => {
                let v = t
                    .render(data)
                    .map_err(|e| format!("runbook env `{k}`: {e}"))?;
                out.env.insert(k.clone(), v);
            }
            EnvValue::Secret(s) => {
                out.env.insert(k.clone(), s.shown());
                out.secrets.insert(k.clone(), s.clone());
            }
        }
    }
    Ok(out)
}

/// Leaves out of `env` the alert values no program can receive: a NUL byte,
/// or a `NAME=value` string over the kernel's limit, and then the largest
/// ones while argv and environment together exceed [`MAX_EXEC_BYTES`]. Only
/// `ALERT_*` variables are dropped (runbookd sets them whether or not a step
/// reads them); each drop is a warning. Returns an error for a variable the
/// step asked for that cannot be passed.
fn fit_env(
    env: &mut BTreeMap<String, String>,
    argv_bytes: usize,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let implicit = |k: &str| k.starts_with("ALERT_");
    let mut bad = Vec::new();
    for (k, v) in env.iter() {
        let why = if v.contains('\0') {
            Some("holds a NUL byte".to_owned())
        } else if k.len() + v.len() + 2 > MAX_ENV_STRING {
            Some(format!(
                "is {} bytes, over the kernel's limit of {MAX_ENV_STRING} for one variable",
                v.len()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            if !implicit(k) {
                return Err(format!(
                    "environment variable `{k}` {why} and cannot be passed to a program"
                ));
            }
            bad.push((k.clone(), why));
        }
    }
    for (k, why) in bad {
        env.remove(&k);
        warnings.push(format!(
            "`{k}` was left out of the environment: its value {why}"
        ));
    }
    let size = |env: &BTreeMap<String, String>| {
        argv_bytes
            + env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
    };
    while size(env) > MAX_EXEC_BYTES {
        let Some((k, len)) = env
            .iter()
            .filter(|(k, _)| implicit(k))
            .map(|(k, v)| (k.clone(), v.len()))
            .max_by_key(|(_, len)| *len)
        else {
            return Err(format!(
                "the step's arguments and environment take {} bytes, over the limit of {MAX_EXEC_BYTES}",
                size(env)
            ));
        };
        env.remove(&k);
        warnings.push(format!(
            "`{k}` ({len} bytes) was left out of the environment: the step's arguments and environment would exceed {MAX_EXEC_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Renders one step against `data`. Without `steps` in `data` (planning), a
/// template that reads them is deferred; at run time `data` carries them and
/// everything is rendered. This is the one place steps are rendered.
#[must_use]
pub fn render_step(step: &Step, data: &Data, base_env: &Result<BaseEnv, String>) -> StepPlan {
    let at_run_time = data.value().get("steps").is_some();
    let defer = |t: &Template| t.uses_steps() && !at_run_time;
    let mut plan = StepPlan {
        name: step.name.clone(),
        // Each kind's rendering, below, replaces this.
        action: match &step.action {
            Action::Run(_) => ActionPlan::Run { argv: None },
            Action::Shell(_) => ActionPlan::Shell {
                script: None,
                vars: BTreeMap::new(),
            },
            Action::Manual(_) | Action::Verify(_) => ActionPlan::Manual,
            Action::Silence(_) => ActionPlan::Silence(None),
            // What it asks is known even when its prompt is rendered at
            // run time.
            Action::Approve(spec) => ActionPlan::Approve(ApprovalPlan {
                prompt: spec.prompt.source().to_owned(),
                timeout_ms: millis(spec.timeout),
                on_timeout: spec.on_timeout,
            }),
        },
        text: None,
        deferred: false,
        templates: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        timeout_ms: millis(step.timeout),
        retries: step.retries,
        retry_delay_ms: millis(step.retry_delay),
        continue_on_failure: step.continue_on_failure,
        when: None,
        warnings: Vec::new(),
        error: None,
        gate: None,
        frozen_approval: None,
    };
    let mut errors = Vec::new();
    let render = |what: &str, t: &Template| match t.render(data) {
        Ok(s) if s.contains('\0') => Err(format!(
            "{what}: a value holds a NUL byte, which cannot be passed to a program"
        )),
        Ok(s) => Ok(s),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let mut ok = |r: Result<String, String>| r.map_err(|e| errors.push(e)).ok();

    if let Some(w) = &step.when {
        let (decision, rendered) = if defer(w) {
            (WhenDecision::AtRunTime, None)
        } else {
            let r = ok(render("when", w));
            let decision = match r.as_deref().map(str::trim) {
                Some("" | "false" | "0") => WhenDecision::Skip,
                _ => WhenDecision::Run,
            };
            (decision, r)
        };
        plan.when = Some(WhenPlan {
            template: w.source().to_owned(),
            decision,
            rendered,
        });
    }

    if let Some(g) = &step.gate {
        // The alert's labels only (checked at load): never deferred.
        let service = ok(render("the gated service", &g.service)).unwrap_or_default();
        if service.trim().is_empty() {
            plan.warnings.push(format!(
                "`{}` renders empty for this alert: no error-budget gate is asked",
                g.service.source()
            ));
        }
        plan.gate = Some(GatePlan {
            service: service.trim().to_owned(),
            on_frozen: g.on_frozen,
        });
    }

    let templates: Vec<&Template> = match &step.action {
        Action::Run(argv) => argv.iter().collect(),
        Action::Shell(t) | Action::Manual(t) => vec![t],
        Action::Silence(spec) => spec.comment.iter().collect(),
        Action::Approve(spec) => vec![&spec.prompt],
        Action::Verify(_) => Vec::new(),
    };
    // An approval step waits its own `timeout`, not a step's.
    if let Action::Approve(spec) = &step.action {
        plan.timeout_ms = millis(spec.timeout);
    }
    // A verify step polls for its own `timeout`; its query, rendered now
    // or (reading earlier steps) at run time.
    if let Action::Verify(spec) = &step.action {
        plan.timeout_ms = millis(spec.timeout);
        let mut burn_rate = None;
        let (query, success, failure, resolved) = match &spec.check {
            crate::runbook::VerifyCheck::Query {
                query,
                success,
                failure,
            } => {
                let text = if query.uses_steps() && !at_run_time {
                    plan.deferred = true;
                    plan.templates = Some(vec![query.source().to_owned()]);
                    None
                } else {
                    ok(query.render(data).map_err(|e| format!("query: {e}")))
                };
                (text, *success, *failure, false)
            }
            crate::runbook::VerifyCheck::AlertResolved => (None, None, None, true),
            crate::runbook::VerifyCheck::BurnRate(b) => {
                burn_rate = Some(b.clone());
                let below = crate::runbook::verify::Condition {
                    op: crate::runbook::verify::Cmp::Lt,
                    value: b.below,
                };
                (None, Some(below), None, false)
            }
        };
        plan.text = Some(match (&query, resolved, &burn_rate) {
            (_, true, _) => "verify that the alert resolved (asks Alertmanager)".to_owned(),
            (_, _, Some(b)) => {
                format!("verify {b} (the query is built from the SLO's SLI when the step runs)")
            }
            (Some(q), _, _) => format!(
                "verify `{q}`{}{}",
                success.map_or(String::new(), |c| format!(" until {c}")),
                failure.map_or(String::new(), |c| format!(", failing at once at {c}"))
            ),
            (None, _, _) => "verify (the query is rendered at run time)".to_owned(),
        });
        plan.action = ActionPlan::Verify(VerifyPlan {
            query,
            success,
            failure,
            alert_resolved: resolved,
            burn_rate,
            initial_delay_ms: millis(spec.initial_delay),
            interval_ms: millis(spec.interval),
            timeout_ms: millis(spec.timeout),
            consecutive_success: spec.consecutive_success,
            on_inconclusive: spec.on_inconclusive,
        });
    }
    if templates.iter().any(|t| defer(t)) {
        plan.deferred = true;
        plan.templates = Some(templates.iter().map(|t| t.source().to_owned()).collect());
    } else {
        match &step.action {
            Action::Run(argv) => {
                let rendered: Vec<Option<String>> = argv
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ok(render(&format!("run[{i}]"), t)))
                    .collect();
                plan.action = ActionPlan::Run {
                    argv: rendered.into_iter().collect(),
                };
            }
            Action::Shell(t) => match t.render_shell(data) {
                Ok(sub) => {
                    plan.action = ActionPlan::Shell {
                        script: Some(sub.script),
                        vars: sub.vars.into_iter().collect(),
                    };
                }
                Err(e) => {
                    ok(Err(format!("shell: {e}")));
                }
            },
            Action::Manual(t) => plan.text = ok(render("manual", t)),
            Action::Verify(_) => {}
            Action::Approve(spec) => {
                let prompt = ok(render("prompt", &spec.prompt)).unwrap_or_default();
                plan.text = Some(format!(
                    "ask for approval: {prompt} (waits {}, then {})",
                    humantime::format_duration(spec.timeout),
                    spec.on_timeout
                ));
                plan.action = ActionPlan::Approve(ApprovalPlan {
                    prompt,
                    timeout_ms: millis(spec.timeout),
                    on_timeout: spec.on_timeout,
                });
            }
            Action::Silence(spec) => {
                let matchers: Vec<crate::plan::ApiMatcher> = match &spec.matchers {
                    Some(list) => list.iter().map(Into::into).collect(),
                    // The alert's own labels; not the mark runbookd puts on
                    // manual runs and drills, so that the silence covers the
                    // real alert those labels name.
                    None => data.value()["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| k.as_str() != "runbookd_origin")
                        .filter_map(|(k, v)| {
                            Some(crate::plan::ApiMatcher {
                                name: k.clone(),
                                value: v.as_str()?.to_owned(),
                                is_regex: false,
                                is_equal: true,
                            })
                        })
                        .collect(),
                };
                let comment = match &spec.comment {
                    Some(t) => ok(render("comment", t)).unwrap_or_default(),
                    None => String::new(),
                };
                plan.text = Some(format!(
                    "silence {} for {}{}",
                    matchers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    humantime::format_duration(spec.duration),
                    match spec.until {
                        crate::runbook::Until::RunEnd => ", expired when the run ends",
                        crate::runbook::Until::Resolved => ", expired when the alert resolves",
                    }
                ));
                let own: crate::alert::Labels = data.value()["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.as_str() != "runbookd_origin")
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect();
                plan.action = ActionPlan::Silence(Some(SilencePlan {
                    alert: crate::alert::fingerprint(&own),
                    covers_others: spec.covers_others,
                    matchers,
                    duration_ms: millis(spec.duration),
                    comment,
                    until: spec.until,
                }));
            }
        }
    }

    if !matches!(
        step.action,
        Action::Manual(_) | Action::Silence(_) | Action::Approve(_) | Action::Verify(_)
    ) {
        match base_env {
            Ok(base) => {
                plan.env.clone_from(&base.env);
                plan.secrets.clone_from(&base.secrets);
            }
            Err(e) => {
                ok(Err(e.clone()));
            }
        }
        for (k, v) in &step.env {
            match v {
                EnvValue::Secret(s) => {
                    plan.env.insert(k.clone(), s.shown());
                    plan.secrets.insert(k.clone(), s.clone());
                }
                EnvValue::Template(t) if defer(t) => {
                    plan.deferred = true;
                    plan.env.insert(k.clone(), t.source().to_owned());
                }
                EnvValue::Template(t) => {
                    plan.secrets.remove(k);
                    if let Some(v) = ok(t.render(data).map_err(|e| format!("env `{k}`: {e}"))) {
                        plan.env.insert(k.clone(), v);
                    }
                }
            }
        }
        if !plan.deferred {
            let argv = plan.argv().unwrap_or_default();
            let no_vars = BTreeMap::new();
            let vars = match &plan.action {
                ActionPlan::Shell { vars, .. } => vars,
                _ => &no_vars,
            };
            let argv_bytes = argv.iter().map(|a| a.len() + 1).sum::<usize>()
                + vars
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 2)
                    .sum::<usize>();
            for a in &argv {
                if a.len() + 1 > MAX_ENV_STRING {
                    ok(Err(format!(
                        "an argument is {} bytes, over the kernel's limit of {MAX_ENV_STRING} for one argument",
                        a.len()
                    )));
                }
            }
            for (k, v) in vars {
                if k.len() + v.len() + 2 > MAX_ENV_STRING {
                    ok(Err(format!(
                        "the value behind `{k}` is {} bytes, over the kernel's limit of {MAX_ENV_STRING} for one variable",
                        v.len()
                    )));
                }
            }
            let mut warnings = Vec::new();
            if let Err(e) = fit_env(&mut plan.env, argv_bytes, &mut warnings) {
                ok(Err(e));
            }
            plan.warnings.extend(warnings);
        }
    }
    if !errors.is_empty() {
        plan.error = Some(errors.join("; "));
    }
    plan
}

/// An approval step's settings, rendered (`ActionPlan::Approve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPlan {
    /// The rendered prompt operators read.
    pub prompt: String,
    pub timeout_ms: u64,
    pub on_timeout: OnTimeout,
}

impl ApprovalPlan {
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A matcher as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl From<&Matcher> for ApiMatcher {
    fn from(m: &Matcher) -> Self {
        let (is_regex, is_equal) = match m.op {
            MatchOp::Equal => (false, true),
            MatchOp::NotEqual => (false, false),
            MatchOp::Regex => (true, true),
            MatchOp::NotRegex => (true, false),
        };
        ApiMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex,
            is_equal,
        }
    }
}

impl TryFrom<&ApiMatcher> for Matcher {
    type Error = String;

    fn try_from(m: &ApiMatcher) -> Result<Self, String> {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&m.name, op, &m.value).map_err(|e| format!("silence matcher `{m}`: {e}"))
    }
}

impl std::fmt::Display for ApiMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// A verify step as rendered for this alert (what `--plan` shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyPlan {
    /// The query to send, alert values escaped in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Condition>,
    /// Asks Alertmanager whether this alert still fires.
    #[serde(default)]
    pub alert_resolved: bool,
    /// An SLO's burn rate: `query` is built from the SLO when the step
    /// runs (`None` in a plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<BurnRate>,
    pub initial_delay_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub consecutive_success: u32,
    pub on_inconclusive: Inconclusive,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step as JSON has always had it: every field of every kind.
    fn wire(kind: &str, extra: &Value) -> Value {
        let mut v = json!({
            "name": "s", "kind": kind, "argv": null, "script": null, "vars": {},
            "text": null, "deferred": false, "templates": null, "env": {},
            "timeout_ms": 1000, "retries": 0, "retry_delay_ms": 0,
            "continue_on_failure": false, "when": null, "error": null,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn each_kind_reads_from_and_writes_back_to_the_flat_json() {
        let approval = json!({"prompt": "go?", "timeout_ms": 60000, "on_timeout": "deny"});
        let cases = [
            (wire("run", &json!({"argv": ["df", "-h"]})), StepKind::Run),
            (
                wire(
                    "shell",
                    &json!({"argv": ["/bin/sh", "-c", "echo \"$V1\""], "script": "echo \"$V1\"", "vars": {"V1": "x"}}),
                ),
                StepKind::Shell,
            ),
            (wire("manual", &json!({"text": "look"})), StepKind::Manual),
            (
                wire(
                    "silence",
                    &json!({"text": "silence a=b", "silence": {"matchers": [{"name": "a", "value": "b", "isRegex": false, "isEqual": true}], "duration_ms": 1000, "comment": "", "until": "run_end", "alert": "f", "covers_others": false}}),
                ),
                StepKind::Silence,
            ),
            (
                wire("approve", &json!({"text": "ask", "approval": approval})),
                StepKind::Approve,
            ),
            (
                wire(
                    "verify",
                    &json!({"text": "verify", "verify": {"query": "up", "success": {"op": "<", "value": 1.0}, "alert_resolved": false, "initial_delay_ms": 0, "interval_ms": 1000, "timeout_ms": 5000, "consecutive_success": 1, "on_inconclusive": "fail"}}),
                ),
                StepKind::Verify,
            ),
            // A run step its frozen gate held for an operator.
            (
                wire("run", &json!({"argv": ["true"], "approval": approval})),
                StepKind::Run,
            ),
            // An approval step held by its frozen gate: both questions kept.
            (
                wire(
                    "approve",
                    &json!({"text": "ask", "approval": approval, "frozen_approval": {"prompt": "frozen: run it anyway?", "timeout_ms": 1_800_000, "on_timeout": "deny"}}),
                ),
                StepKind::Approve,
            ),
        ];
        for (json, kind) in cases {
            let plan: StepPlan = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(plan.kind(), kind);
            assert_eq!(serde_json::to_value(&plan).unwrap(), json, "{kind:?}");
        }
        let held: StepPlan = serde_json::from_value(wire(
            "run",
            &json!({"argv": ["true"], "approval": approval}),
        ))
        .unwrap();
        assert_eq!(held.asks().map(|a| a.prompt.as_str()), Some("go?"));
        assert_eq!(held.argv(), Some(vec!["true".to_owned()]));
        let both: StepPlan = serde_json::from_value(wire(
            "approve",
            &json!({"approval": approval, "frozen_approval": {"prompt": "frozen: run it anyway?", "timeout_ms": 1_800_000, "on_timeout": "deny"}}),
        ))
        .unwrap();
        assert_eq!(
            both.asks().map(|a| a.prompt.as_str()),
            Some("frozen: run it anyway?"),
            "the gate is asked first"
        );
        assert!(matches!(&both.action, ActionPlan::Approve(a) if a.prompt == "go?"));
    }

    #[test]
    fn a_record_missing_its_kinds_settings_is_refused_with_the_step() {
        let err = serde_json::from_value::<StepPlan>(wire("approve", &json!({})))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("approval step `s` without its `approval`"),
            "{err}"
        );
        let err = serde_json::from_value::<StepPlan>(wire("verify", &json!({})))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("verify step `s` without its `verify`"),
            "{err}"
        );
    }
}
