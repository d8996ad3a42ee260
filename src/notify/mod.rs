//! Telling people (DESIGN §9): what a runbook's `communication:` and
//! `escalation:` say, the notifiers of the server config, and the outbox
//! worker that delivers what the store queued.
//!
//! The store writes each notification in the same transaction as the event
//! that caused it (an incident opened, a run failed, an escalation timer
//! fired), from the rules snapshotted on the incident when its runbooks
//! matched. [`deliver`] then delivers at-least-once: retries with backoff and
//! jitter, `Retry-After`, a rate per notifier, a maximum age, then `dead`
//! with the last error.

pub mod config;
pub mod deliver;
mod send;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Names an enum's variants once: `as_str`, `Display`, `FromStr` (with the
/// list of accepted names), `ALL`.
macro_rules! named {
    ($(#[$m:meta])* $ty:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $ty { $($(#[$vm])* $v),+ }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($ty::$v),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " `{}`: expected one of {}"),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub(crate) use named;

named!(
    /// What happened to an incident, that people may be told about.
    Event, "event" {
        IncidentOpened = "incident_opened",
        RunStarted = "run_started",
        RunSucceeded = "run_succeeded",
        RunFailed = "run_failed",
        StepFailed = "step_failed",
        ApprovalRequested = "approval_requested",
        IncidentAcknowledged = "incident_acknowledged",
        IncidentResolved = "incident_resolved",
        Escalated = "escalated",
        /// An alert storm: runs over a rate cap are being skipped (told
        /// once per storm).
        RunsRateLimited = "runs_rate_limited",
        /// A `verify:` step failed: the remediation did not work (told
        /// besides `step_failed`).
        VerifyFailed = "verify_failed",
        /// A policy over what the incident cost requires its postmortem
        /// (told once, when its cost is recorded after it resolved).
        PostmortemRequired = "postmortem_required",
        /// A service's error-budget policies froze it (about the service,
        /// not an incident).
        BudgetFrozen = "budget_frozen",
        /// A frozen service's policies no longer freeze it.
        BudgetUnfrozen = "budget_unfrozen",
    }
);

named!(
    /// What makes an escalation unnecessary (`unless:`).
    Unless, "condition" {
        /// Someone acknowledged the incident.
        Acknowledged = "acknowledged",
        /// The incident resolved.
        Resolved = "resolved",
        /// A run of this runbook for the incident succeeded.
        Succeeded = "succeeded",
    }
);

named!(
    /// Where a notification stands in the outbox.
    DeliveryState, "delivery state" {
        /// Waiting for its next attempt (`next_at`).
        Pending = "pending",
        /// A replica is delivering it (until its lease ends).
        Sending = "sending",
        /// The receiver accepted it.
        Delivered = "delivered",
        /// Given up: a permanent refusal, or too old; `last_error` says why.
        Dead = "dead",
        /// Shadow mode: recorded to show what would be sent; never sent.
        Suppressed = "suppressed",
    }
);

named!(
    /// Where an escalation timer stands.
    TimerState, "timer state" {
        Pending = "pending",
        Fired = "fired",
        Cancelled = "cancelled",
    }
);

/// One `communication:` entry: tell `notify` when one of `on` happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Communication {
    pub on: Vec<Event>,
    pub notify: Vec<String>,
    /// A template over the step context plus `event`; the default text when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One `escalation:` entry: `after` the incident opened, unless one of
/// `unless` happened first, notify `notify` (once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    #[serde(with = "millis")]
    pub after: Duration,
    pub unless: Vec<Unless>,
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

/// A runbook's `communication:` and `escalation:`, as stored on the incidents
/// it matched (a reload changes what later incidents get, not earlier ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communication: Vec<Communication>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<Escalation>,
}

impl Policy {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.communication.is_empty() && self.escalation.is_empty()
    }

    /// Every notifier name the policy uses.
    pub fn notifiers(&self) -> impl Iterator<Item = &str> {
        self.communication
            .iter()
            .flat_map(|c| c.notify.iter())
            .chain(self.escalation.iter().flat_map(|e| e.notify.iter()))
            .map(String::as_str)
    }
}

/// The policies of an incident's runbooks, by runbook name.
pub type Policies = BTreeMap<String, Policy>;

/// A notification to queue with an event: to whom, about what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub notifier: String,
    pub event: Event,
    pub runbook: Option<String>,
    pub run_id: Option<i64>,
    pub step: Option<String>,
    /// What happened, in a sentence (the default message and the detail of
    /// every message).
    pub detail: String,
    /// The rule's message template, if it has one.
    pub template: Option<String>,
}

/// The events a finished run causes: run succeeded or failed, and each
/// failed step.
#[must_use]
pub fn run_ended<'a>(
    runbook: &'a str,
    run_id: i64,
    state: crate::incident::RunState,
    summary: &str,
    result: Option<&'a crate::incident::RunDetail>,
) -> Vec<Happened<'a>> {
    use crate::incident::RunState as S;
    let mut out = Vec::new();
    if let Some(crate::incident::RunDetail::Executed(r)) = result {
        for s in &r.steps {
            // The one rule of what a failed step is (StepOutcome::is_failure).
            if let Some(o) = s.outcome.as_ref().filter(|o| o.is_failure()) {
                let detail = format!(
                    "run #{run_id} of `{runbook}`: step `{}` {}",
                    s.name,
                    o.detail().unwrap_or_else(|| o.status().to_owned())
                );
                if s.plan.kind == crate::plan::StepKind::Verify {
                    out.push(Happened {
                        event: Event::VerifyFailed,
                        runbook: Some(runbook),
                        run_id: Some(run_id),
                        step: Some(&s.name),
                        detail: detail.clone(),
                    });
                }
                out.push(Happened {
                    event: Event::StepFailed,
                    runbook: Some(runbook),
                    run_id: Some(run_id),
                    step: Some(&s.name),
                    detail,
                });
            }
        }
    }
    let event = match state {
        S::Succeeded | S::SucceededWithFailures => Some(Event::RunSucceeded),
        S::Failed | S::TimedOut | S::Interrupted => Some(Event::RunFailed),
        _ => None,
    };
    if let Some(event) = event {
        out.push(Happened {
            event,
            runbook: Some(runbook),
            run_id: Some(run_id),
            step: None,
            detail: format!("run #{run_id} of `{runbook}` {state}: {summary}"),
        });
    }
    out
}

/// What happened, for the notifications about it.
#[derive(Debug, Clone)]
pub struct Happened<'a> {
    pub event: Event,
    /// The run's runbook, for run and step events: only its rules apply.
    /// `None`: an incident event, for which every runbook's rules apply.
    pub runbook: Option<&'a str>,
    pub run_id: Option<i64>,
    pub step: Option<&'a str>,
    pub detail: String,
}

/// The notifications `what` causes under `policies`: one per (notifier,
/// message) for an incident event, however many runbooks ask for it.
#[must_use]
pub fn queue(policies: &Policies, what: &Happened<'_>) -> Vec<Queue> {
    let mut out: Vec<Queue> = Vec::new();
    for (name, policy) in policies {
        if what.runbook.is_some_and(|rb| rb != name) {
            continue;
        }
        for rule in policy
            .communication
            .iter()
            .filter(|c| c.on.contains(&what.event))
        {
            for notifier in &rule.notify {
                let dup = out
                    .iter()
                    .any(|q| &q.notifier == notifier && q.template == rule.message);
                if !dup {
                    out.push(Queue {
                        notifier: notifier.clone(),
                        event: what.event,
                        runbook: what
                            .runbook
                            .map(str::to_owned)
                            .or_else(|| Some(name.clone())),
                        run_id: what.run_id,
                        step: what.step.map(str::to_owned),
                        detail: what.detail.clone(),
                        template: rule.message.clone(),
                    });
                }
            }
        }
    }
    out
}

/// What a notification is about: an incident, or a service's error budget
/// (`budget_frozen`, `budget_unfrozen`). Shown as `INC-0042` or
/// `budget:checkout` (PagerDuty's `dedup_key` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    Incident(crate::incident::IncidentId),
    Budget(String),
}

impl About {
    /// From the outbox row's `incident_id` and `service`.
    #[must_use]
    pub fn of(incident: Option<i64>, service: Option<String>) -> About {
        match incident {
            Some(id) => About::Incident(crate::incident::IncidentId(id)),
            None => About::Budget(service.unwrap_or_default()),
        }
    }

    /// The outbox row's `(incident_id, service)`.
    #[must_use]
    pub fn columns(&self) -> (Option<i64>, Option<&str>) {
        match self {
            About::Incident(id) => (Some(id.0), None),
            About::Budget(service) => (None, Some(service)),
        }
    }

    /// The runbookd page it is on, under the external URL.
    #[must_use]
    pub fn path(&self) -> String {
        match self {
            About::Incident(id) => format!("/incidents/{id}"),
            About::Budget(_) => "/slos".to_owned(),
        }
    }
}

impl fmt::Display for About {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            About::Incident(id) => write!(f, "{id}"),
            About::Budget(service) => write!(f, "budget:{service}"),
        }
    }
}

impl Serialize for About {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A notification as the incident, the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: i64,
    pub incident: About,
    pub notifier: String,
    pub event: Event,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub runbook: Option<String>,
    pub run_id: Option<i64>,
    pub step: Option<String>,
    pub detail: String,
    pub created_at: String,
    /// When the next attempt is due (pending ones).
    pub next_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// An escalation timer of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct EscalationRecord {
    pub runbook: String,
    pub due_at: String,
    pub state: TimerState,
    pub unless: Vec<Unless>,
    pub notify: Vec<String>,
    /// Why it was cancelled, or what firing did.
    pub reason: Option<String>,
}

/// Filters of the notifications list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    pub incident: Option<crate::incident::IncidentId>,
    pub state: Option<DeliveryState>,
    pub limit: Option<u32>,
}

/// A notification taken from the outbox to deliver.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    /// 1 for the first attempt; the fence of [`Settle`].
    pub attempt: u32,
    pub notifier: String,
    pub event: Event,
    pub incident: About,
    pub title: String,
    pub severity: crate::runbook::Severity,
    pub status: crate::incident::IncidentStatus,
    pub services: Vec<String>,
    pub runbook: Option<String>,
    pub run_id: Option<i64>,
    pub step: Option<String>,
    pub detail: String,
    pub template: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The Alertmanager notification of the event (the template context).
    pub body: Option<Vec<u8>>,
    pub fingerprint: Option<String>,
}

impl OutboxItem {
    /// The event's alert: the one of `fingerprint` in the notification the
    /// event came with (or its first).
    #[must_use]
    pub fn alert(&self) -> Option<crate::alert::Alert> {
        let n = crate::alert::Notification::from_json(self.body.as_deref()?).ok()?;
        let by_fingerprint = self
            .fingerprint
            .as_deref()
            .and_then(|f| n.alerts.iter().find(|a| a.fingerprint == f));
        by_fingerprint.or_else(|| n.alerts.first()).cloned()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Delivered,
    /// Failed; try again at `at` (attempt counted).
    Retry {
        at: chrono::DateTime<chrono::Utc>,
        error: String,
    },
    /// Not attempted (the notifier's rate): again at `at`, attempt not counted.
    Defer {
        at: chrono::DateTime<chrono::Utc>,
    },
    /// Given up.
    Dead {
        error: String,
    },
}

/// The timeline's and messages' wording of notification events.
pub mod say {
    use std::time::Duration;

    use super::Unless;

    #[must_use]
    pub fn escalated(
        runbook: &str,
        after: Duration,
        unless: &[Unless],
        notify: &[String],
    ) -> String {
        let unless: Vec<&str> = unless.iter().map(|u| u.as_str()).collect();
        format!(
            "escalated: `{runbook}` not {} within {}; notifying {}",
            if unless.is_empty() {
                "handled".to_owned()
            } else {
                unless.join(" or ")
            },
            humantime::format_duration(after),
            notify.join(", ")
        )
    }

    #[must_use]
    pub fn acknowledged(who: &str) -> String {
        format!("acknowledged by {who}")
    }

    #[must_use]
    pub fn escalation_cancelled(why: &str) -> String {
        format!("escalation cancelled: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[Event], notify: &[&str], message: Option<&str>) -> Policy {
        Policy {
            communication: vec![Communication {
                on: on.to_vec(),
                notify: notify.iter().map(|s| (*s).to_owned()).collect(),
                message: message.map(str::to_owned),
            }],
            escalation: Vec::new(),
        }
    }

    #[test]
    fn an_incident_event_notifies_each_target_once_across_runbooks() {
        let mut p = Policies::new();
        p.insert(
            "a".into(),
            policy(&[Event::IncidentOpened], &["slack"], None),
        );
        p.insert(
            "b".into(),
            policy(&[Event::IncidentOpened], &["slack", "pd"], None),
        );
        p.insert("c".into(), policy(&[Event::RunFailed], &["mail"], None));
        let q = queue(
            &p,
            &Happened {
                event: Event::IncidentOpened,
                runbook: None,
                run_id: None,
                step: None,
                detail: "opened".into(),
            },
        );
        let targets: Vec<&str> = q.iter().map(|q| q.notifier.as_str()).collect();
        assert_eq!(targets, ["slack", "pd"]);
    }

    #[test]
    fn a_run_event_follows_only_its_runbooks_rules() {
        let mut p = Policies::new();
        p.insert(
            "a".into(),
            policy(&[Event::RunFailed], &["slack"], Some("{{event}}")),
        );
        p.insert("b".into(), policy(&[Event::RunFailed], &["pd"], None));
        let q = queue(
            &p,
            &Happened {
                event: Event::RunFailed,
                runbook: Some("b"),
                run_id: Some(7),
                step: None,
                detail: "failed".into(),
            },
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].notifier, "pd");
        assert_eq!(q[0].run_id, Some(7));
    }

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>(), Ok(*e));
        }
        let err = "opened".parse::<Event>().unwrap_err();
        assert!(err.contains("incident_opened"), "{err}");
        let json = serde_json::to_string(&Policy {
            communication: Vec::new(),
            escalation: vec![Escalation {
                after: Duration::from_secs(90),
                unless: vec![Unless::Acknowledged],
                notify: vec!["pd".into()],
                message: None,
            }],
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"escalation":[{"after":90000,"unless":["acknowledged"],"notify":["pd"]}]}"#
        );
    }
}
