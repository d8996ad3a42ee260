//! The incident lifecycle as pure transitions: what an event does to an
//! incident's status and escalation, decided here and only persisted by the
//! store. `investigating` when opened → `identified` when a remediation run
//! starts → `monitoring` when every remediation run succeeded → `resolved`
//! when Alertmanager reports every alert resolved; a failed, timed-out or
//! interrupted remediation run marks the incident `run_failed` and puts it
//! back to `investigating`. A run that succeeded but left checklist items
//! (manual steps) leaves the incident `identified`: people still have work
//! to do, so it is not `monitoring` until they tick the last one. A re-run
//! takes its original's place: once no remediation run that failed is left
//! un-re-run, `run_failed` clears. (`escalated` is not the lifecycle's: it
//! means an escalation timer fired.)

use crate::incident::notices::Happened;
use crate::incident::{IncidentStatus, RunState};
use crate::plan::Phase;
use crate::runbook::notify::Event as Told;

/// What the lifecycle needs to know of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    pub status: IncidentStatus,
    /// A remediation run of it failed: it waits for people.
    pub run_failed: bool,
}

impl Incident {
    /// The incident once `t` is recorded on it.
    #[must_use]
    pub fn after(self, t: &Transition) -> Incident {
        Incident {
            status: t.status,
            run_failed: t.run_failed.unwrap_or(self.run_failed),
        }
    }
}

/// Something that happened to an incident.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    RunStarted {
        runbook: &'a str,
        phase: Phase,
        /// Remediation runs of the incident that failed and were not re-run
        /// since.
        failed_runs: usize,
    },
    RunFinished {
        runbook: &'a str,
        phase: Phase,
        state: RunState,
        summary: &'a str,
        /// Remediation runs of the incident that have not succeeded (nor been
        /// skipped or cancelled), counted once this run's state is recorded.
        remediation_not_succeeded: usize,
        /// Checklist items (manual steps) this run left for people.
        open_checklist: usize,
    },
    /// People ticked or reopened checklist items.
    ChecklistChanged {
        /// Items of the incident still open.
        open: usize,
        /// As in `RunFinished`.
        remediation_not_succeeded: usize,
    },
    /// Alertmanager reports every alert of the incident resolved.
    AllAlertsResolved,
}

/// What to record: a new status (with its timeline entry) and whether a
/// run of the incident failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: IncidentStatus,
    /// Set or clear `run_failed`; `None` leaves it (a resolved incident
    /// still says a run of it failed).
    pub run_failed: Option<bool>,
    pub author: &'static str,
    pub message: String,
}

/// The transition `event` causes for `incident`, if any.
#[must_use]
pub fn next(incident: Incident, event: Event<'_>) -> Option<Transition> {
    let runbookd = |status, run_failed: bool, message: String| Transition {
        status,
        run_failed: Some(run_failed),
        author: "runbookd",
        message,
    };
    match event {
        Event::RunStarted {
            runbook,
            phase,
            failed_runs,
        } => (incident.status == IncidentStatus::Investigating
            && failed_runs == 0
            && phase == Phase::Remediation)
            .then(|| {
                runbookd(
                    IncidentStatus::Identified,
                    false,
                    format!("identified: runbook `{runbook}` is running"),
                )
            }),
        Event::RunFinished { .. } if incident.status == IncidentStatus::Resolved => None,
        Event::RunFinished {
            phase: Phase::Resolution,
            ..
        } => None,
        Event::RunFinished {
            runbook,
            state: state @ (RunState::Failed | RunState::TimedOut | RunState::Interrupted),
            summary,
            ..
        } => Some(runbookd(
            IncidentStatus::Investigating,
            true,
            format!(
                "a run failed: runbook `{runbook}` {} ({summary}); people must act",
                state.words()
            ),
        )),
        Event::RunFinished {
            runbook,
            state: RunState::Succeeded | RunState::SucceededWithFailures,
            remediation_not_succeeded: 0,
            open_checklist: open @ 1..,
            ..
        } if incident.status != IncidentStatus::Monitoring => {
            Some(runbookd(
                IncidentStatus::Identified,
                false,
                format!(
                    "identified: runbook `{runbook}` ran and left {open} checklist item(s) for people; not monitoring until they are done"
                ),
            ))
        }
        Event::RunFinished {
            state: RunState::Succeeded | RunState::SucceededWithFailures,
            remediation_not_succeeded: 0,
            ..
        } if incident.status != IncidentStatus::Monitoring => Some(runbookd(
            IncidentStatus::Monitoring,
            false,
            "monitoring: every run of the incident succeeded".to_owned(),
        )),
        Event::ChecklistChanged {
            open: 0,
            remediation_not_succeeded: 0,
        } if incident.status == IncidentStatus::Identified && !incident.run_failed => Some(runbookd(
            IncidentStatus::Monitoring,
            false,
            "monitoring: every run of the incident succeeded and every checklist item is done"
                .to_owned(),
        )),
        Event::ChecklistChanged { open: 1.., .. } if incident.status == IncidentStatus::Monitoring => {
            Some(runbookd(
                IncidentStatus::Identified,
                false,
                "identified: a checklist item was reopened; not monitoring until it is done"
                    .to_owned(),
            ))
        }
        Event::RunFinished { .. } | Event::ChecklistChanged { .. } => None,
        Event::AllAlertsResolved => Some(Transition {
            status: IncidentStatus::Resolved,
            run_failed: None,
            author: "alertmanager",
            message: "resolved: Alertmanager reports every alert of the incident resolved"
                .to_owned(),
        }),
    }
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
                if s.plan.kind() == crate::runbook::StepKind::Verify {
                    out.push(Happened {
                        event: Told::VerifyFailed,
                        runbook: Some(runbook),
                        run_id: Some(run_id),
                        step: Some(&s.name),
                        detail: detail.clone(),
                    });
                }
                out.push(Happened {
                    event: Told::StepFailed,
                    runbook: Some(runbook),
                    run_id: Some(run_id),
                    step: Some(&s.name),
                    detail,
                });
            }
        }
    }
    let event = match state {
        S::Succeeded | S::SucceededWithFailures => Some(Told::RunSucceeded),
        S::Failed | S::TimedOut | S::Interrupted => Some(Told::RunFailed),
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

/// What becomes of a running run taken back from its owner (its replica
/// died or stalled, or runbookd restarted): a cancellation asked for while
/// it ran ends it `cancelled`; otherwise an idempotent run is queued again
/// (its attempt counted) and any other ends `interrupted`, since a step may
/// have started and must not run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Requeued,
    Ended(RunState),
}

#[must_use]
pub fn taken(idempotent: bool, cancel_requested: bool) -> Taken {
    if cancel_requested {
        Taken::Ended(RunState::Cancelled)
    } else if idempotent {
        Taken::Requeued
    } else {
        Taken::Ended(RunState::Interrupted)
    }
}

/// What a person's cancel does to a run, by the state it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Queued or waiting for approval: it ends `cancelled` now, and its
    /// pending approval is withdrawn.
    EndNow,
    /// Running: its owner is asked to stop it (it kills its steps and
    /// records the end).
    AskOwner,
    /// It already ended: there is nothing to cancel.
    AlreadyEnded,
}

#[must_use]
pub fn cancel(state: RunState) -> Cancel {
    match state {
        RunState::Queued | RunState::AwaitingApproval => Cancel::EndNow,
        RunState::Running => Cancel::AskOwner,
        RunState::Succeeded
        | RunState::SucceededWithFailures
        | RunState::Failed
        | RunState::TimedOut
        | RunState::Cancelled
        | RunState::Interrupted
        | RunState::Skipped
        | RunState::Planned => Cancel::AlreadyEnded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Incident = Incident {
        status: IncidentStatus::Investigating,
        run_failed: false,
    };

    fn finished(state: RunState, not_succeeded: usize) -> Event<'static> {
        Event::RunFinished {
            runbook: "disk",
            phase: Phase::Remediation,
            state,
            summary: "`df` failed",
            remediation_not_succeeded: not_succeeded,
            open_checklist: 0,
        }
    }

    fn at(status: IncidentStatus, run_failed: bool) -> Incident {
        Incident { status, run_failed }
    }

    #[test]
    fn a_remediation_run_starting_identifies_the_incident() {
        let started = Event::RunStarted {
            runbook: "disk",
            phase: Phase::Remediation,
            failed_runs: 0,
        };
        let t = next(OPEN, started).unwrap();
        assert_eq!(t.status, IncidentStatus::Identified);
        assert_eq!(t.message, "identified: runbook `disk` is running");
        // Not while a failed run is left, not for on_resolved runs, not from later states.
        let another_failed = Event::RunStarted {
            runbook: "disk",
            phase: Phase::Remediation,
            failed_runs: 1,
        };
        assert_eq!(
            next(at(IncidentStatus::Investigating, true), another_failed),
            None
        );
        assert_eq!(next(at(IncidentStatus::Monitoring, false), started), None);
        // A re-run of the failed run: it takes the failed one's place.
        let t = next(at(IncidentStatus::Investigating, true), started).unwrap();
        assert_eq!(
            (t.status, t.run_failed),
            (IncidentStatus::Identified, Some(false))
        );
        let resolution = Event::RunStarted {
            runbook: "disk",
            phase: Phase::Resolution,
            failed_runs: 0,
        };
        assert_eq!(next(OPEN, resolution), None);
    }

    #[test]
    fn a_failed_or_timed_out_run_goes_back_to_investigating() {
        for state in [RunState::Failed, RunState::TimedOut, RunState::Interrupted] {
            let t = next(at(IncidentStatus::Monitoring, false), finished(state, 1)).unwrap();
            assert_eq!(t.run_failed, Some(true));
            assert_eq!(t.status, IncidentStatus::Investigating);
            assert!(
                t.message.starts_with("a run failed: runbook `disk` "),
                "{}",
                t.message
            );
        }
        assert!(next(OPEN, finished(RunState::TimedOut, 1))
            .unwrap()
            .message
            .contains("timed out"));
    }

    #[test]
    fn monitoring_only_when_every_remediation_run_succeeded() {
        let ident = at(IncidentStatus::Identified, false);
        let t = next(ident, finished(RunState::Succeeded, 0)).unwrap();
        assert_eq!(t.status, IncidentStatus::Monitoring);
        assert!(next(ident, finished(RunState::SucceededWithFailures, 0)).is_some());
        assert_eq!(
            next(ident, finished(RunState::Succeeded, 1)),
            None,
            "another run is open"
        );
        assert_eq!(
            next(
                at(IncidentStatus::Investigating, true),
                finished(RunState::Succeeded, 1)
            ),
            None,
            "an incident whose run failed stays with people"
        );
        // ... until that run is re-run and succeeds.
        let t = next(
            at(IncidentStatus::Identified, true),
            finished(RunState::Succeeded, 0),
        )
        .unwrap();
        assert_eq!(
            (t.status, t.run_failed),
            (IncidentStatus::Monitoring, Some(false))
        );
        // A run that left checklist items for people is not monitoring: a
        // diagnostics-only run found what to do, it did not do it.
        let left = Event::RunFinished {
            runbook: "disk",
            phase: Phase::Remediation,
            state: RunState::Succeeded,
            summary: "",
            remediation_not_succeeded: 0,
            open_checklist: 1,
        };
        let t = next(ident, left).unwrap();
        assert_eq!(t.status, IncidentStatus::Identified);
        assert!(
            t.message.contains("left 1 checklist item(s) for people"),
            "{}",
            t.message
        );
        assert_eq!(
            next(
                at(IncidentStatus::Monitoring, false),
                finished(RunState::Succeeded, 0)
            ),
            None
        );
        for quiet in [RunState::Cancelled, RunState::Skipped, RunState::Planned] {
            assert_eq!(next(ident, finished(quiet, 0)), None, "{quiet}");
        }
    }

    #[test]
    fn ticking_the_last_checklist_item_moves_to_monitoring_and_reopening_moves_back() {
        let ident = at(IncidentStatus::Identified, false);
        let done = |open, not_succeeded| Event::ChecklistChanged {
            open,
            remediation_not_succeeded: not_succeeded,
        };
        let t = next(ident, done(0, 0)).unwrap();
        assert_eq!(t.status, IncidentStatus::Monitoring);
        assert!(
            t.message.contains("every checklist item is done"),
            "{}",
            t.message
        );
        assert_eq!(next(ident, done(1, 0)), None, "items are left");
        assert_eq!(next(ident, done(0, 1)), None, "a run is still going");
        assert_eq!(
            next(at(IncidentStatus::Identified, true), done(0, 0)),
            None,
            "a failed run is left for people"
        );
        let t = next(at(IncidentStatus::Monitoring, false), done(1, 0)).unwrap();
        assert_eq!(t.status, IncidentStatus::Identified);
        assert_eq!(next(at(IncidentStatus::Resolved, false), done(1, 0)), None);
    }

    #[test]
    fn a_resolved_incident_and_resolution_runs_change_nothing() {
        assert_eq!(
            next(
                at(IncidentStatus::Resolved, false),
                finished(RunState::Failed, 1)
            ),
            None
        );
        let resolution = Event::RunFinished {
            runbook: "disk",
            phase: Phase::Resolution,
            state: RunState::Failed,
            summary: "",
            remediation_not_succeeded: 0,
            open_checklist: 0,
        };
        assert_eq!(next(OPEN, resolution), None);
    }

    #[test]
    fn alertmanager_resolves() {
        let t = next(
            at(IncidentStatus::Monitoring, true),
            Event::AllAlertsResolved,
        )
        .unwrap();
        assert_eq!(
            (t.status, t.author, t.run_failed),
            (IncidentStatus::Resolved, "alertmanager", None)
        );
    }

    #[test]
    fn a_run_taken_from_its_owner_runs_again_only_if_idempotent_and_not_cancelled() {
        assert_eq!(taken(true, false), Taken::Requeued);
        assert_eq!(taken(false, false), Taken::Ended(RunState::Interrupted));
        assert_eq!(taken(true, true), Taken::Ended(RunState::Cancelled));
        assert_eq!(taken(false, true), Taken::Ended(RunState::Cancelled));
    }

    #[test]
    fn a_cancel_ends_a_waiting_run_asks_a_running_one_and_refuses_an_ended_one() {
        for s in RunState::ALL {
            let want = match s {
                RunState::Queued | RunState::AwaitingApproval => Cancel::EndNow,
                RunState::Running => Cancel::AskOwner,
                _ => Cancel::AlreadyEnded,
            };
            assert_eq!(cancel(s), want, "{s}");
        }
    }
}
