//! Approval steps (DESIGN §9): `approve: {prompt, timeout, on_timeout}`.
//!
//! A run that reaches an approval step pauses: the store records the steps
//! done so far, the run's state becomes `awaiting_approval` (it holds no
//! step slot and no lease) and a pending approval row with its deadline. The
//! first decision wins (an operator's approve or deny, or the deadline with
//! `on_timeout`): it queues the run again, and whichever replica claims it
//! resumes after the approval step with the results of the steps before.
//! A denial, or a timeout that denies, fails the step: `on_failure` runs
//! unless the step has `continue_on_failure`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::named::named;
pub use crate::plan::ApprovalPlan;
pub use crate::runbook::OnTimeout;

named!(
    /// An operator's decision (`POST /api/v1/runs/{id}/approval`).
    Decision, "decision" {
        Approve = "approve",
        Deny = "deny",
    }
);

named!(
    /// Where an approval stands.
    ApprovalState, "approval state" {
        /// Waiting for an operator or its deadline.
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// No decision before the deadline: `on_timeout` decided.
        TimedOut = "timed_out",
        /// The run was cancelled (by a person, or its alert resolved) while it waited.
        Cancelled = "cancelled",
    }
);

impl Decision {
    /// The state an approval takes on this decision.
    #[must_use]
    pub fn state(self) -> ApprovalState {
        match self {
            Decision::Approve => ApprovalState::Approved,
            Decision::Deny => ApprovalState::Denied,
        }
    }
}

/// What the store records when a run pauses on an approval step.
#[derive(Debug, Clone)]
pub struct Request {
    /// The step's name and position in the run's main list.
    pub step: String,
    pub index: u32,
    pub plan: ApprovalPlan,
}

/// One approval of a run, as the incident shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: i64,
    pub run_id: crate::ids::RunId,
    pub runbook: String,
    pub step: String,
    pub index: u32,
    pub prompt: String,
    pub requested_at: crate::timestamp::Timestamp,
    /// When `on_timeout` decides.
    pub deadline: crate::timestamp::Timestamp,
    pub on_timeout: OnTimeout,
    pub state: ApprovalState,
    /// Who decided (the login with `auth.users`), or `runbookd` for a timeout.
    pub decided_by: Option<String>,
    pub decided_at: Option<crate::timestamp::Timestamp>,
    pub comment: Option<String>,
}

impl Approval {
    /// Whether the run goes on past the step: approved, or timed out with
    /// `on_timeout: approve`.
    #[must_use]
    pub fn granted(&self) -> bool {
        match self.state {
            ApprovalState::Approved => true,
            ApprovalState::TimedOut => self.on_timeout == OnTimeout::Approve,
            ApprovalState::Pending | ApprovalState::Denied | ApprovalState::Cancelled => false,
        }
    }

    /// One sentence on the decision (`approved by alice: go`, `no decision
    /// within 30m: denied (on_timeout)`).
    #[must_use]
    pub fn sentence(&self) -> String {
        let by = self.decided_by.as_deref().unwrap_or("someone");
        let comment = self
            .comment
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        match self.state {
            ApprovalState::Pending => "waiting for a decision".into(),
            ApprovalState::Approved => format!("approved by {by}{comment}"),
            ApprovalState::Denied => format!("denied by {by}{comment}"),
            ApprovalState::TimedOut => format!(
                "no decision before {}: {} (on_timeout: {})",
                self.deadline,
                if self.granted() { "approved" } else { "denied" },
                self.on_timeout
            ),
            ApprovalState::Cancelled => "withdrawn: the run was cancelled".into(),
        }
    }
}

/// The timeline's wording.
pub(crate) mod say {
    use super::{Approval, Request};

    pub fn requested(run: i64, runbook: &str, r: &Request, deadline: &str) -> String {
        format!(
            "run #{run} of `{runbook}` waits for approval of step `{}`: {} (until {deadline}, then {})",
            r.step, r.plan.prompt, r.plan.on_timeout
        )
    }

    pub fn decided(a: &Approval) -> String {
        format!(
            "run #{} of `{}`: step `{}` {}",
            a.run_id,
            a.runbook,
            a.step,
            a.sentence()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(state: ApprovalState, on_timeout: OnTimeout) -> Approval {
        Approval {
            id: 1,
            run_id: crate::ids::RunId(7),
            runbook: "rb".into(),
            step: "go".into(),
            index: 1,
            prompt: "Restart?".into(),
            requested_at: "2026-12-05T10:00:00Z".parse().unwrap(),
            deadline: "2026-12-05T10:30:00Z".parse().unwrap(),
            on_timeout,
            state,
            decided_by: Some("alice".into()),
            decided_at: Some("2026-12-05T10:30:00Z".parse().unwrap()),
            comment: Some("ok".into()),
        }
    }

    #[test]
    fn only_an_approval_or_an_approving_timeout_lets_the_run_go_on() {
        use ApprovalState as S;
        assert!(approval(S::Approved, OnTimeout::Deny).granted());
        assert!(approval(S::TimedOut, OnTimeout::Approve).granted());
        assert!(!approval(S::TimedOut, OnTimeout::Deny).granted());
        assert!(!approval(S::Denied, OnTimeout::Approve).granted());
        assert!(!approval(S::Pending, OnTimeout::Approve).granted());
        assert!(!approval(S::Cancelled, OnTimeout::Approve).granted());
        assert_eq!(
            approval(S::Denied, OnTimeout::Deny).sentence(),
            "denied by alice: ok"
        );
        assert!(approval(S::TimedOut, OnTimeout::Deny)
            .sentence()
            .contains("denied (on_timeout: deny)"));
        assert_eq!("approve".parse::<Decision>(), Ok(Decision::Approve));
        assert!("yes"
            .parse::<Decision>()
            .unwrap_err()
            .contains("approve, deny"));
    }
}
