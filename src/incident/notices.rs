//! Notification records: what the store queues in the outbox, what the
//! outbox worker takes from it, and what the incident, the API and the CLI
//! show of it. [`crate::notify`] delivers them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::named::named;
use crate::runbook::notify::{Event, Policies, Unless};

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
    pub run_id: Option<crate::incident::RunId>,
    pub step: Option<String>,
    pub detail: String,
    pub created_at: crate::timestamp::Timestamp,
    /// When the next attempt is due (pending ones).
    pub next_at: Option<crate::timestamp::Timestamp>,
    pub delivered_at: Option<crate::timestamp::Timestamp>,
}

/// An escalation timer of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct EscalationRecord {
    pub runbook: String,
    pub due_at: crate::timestamp::Timestamp,
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
