//! What a runbook says about telling people: its `communication:` and
//! `escalation:` (DESIGN §9), and the events they name. Part of the runbook
//! model: the store snapshots a runbook's policy on each incident it
//! matches, and [`crate::notify`] delivers what the store queued.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::named::named;

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
