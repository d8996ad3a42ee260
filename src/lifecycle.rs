//! The incident lifecycle as pure transitions: what an event does to an
//! incident's status and escalation, decided here and only persisted by the
//! store. `investigating` when opened → `identified` when a remediation run
//! starts → `monitoring` when every remediation run succeeded → `resolved`
//! when Alertmanager reports every alert resolved; a failed or timed-out
//! remediation run escalates the incident and puts it back to
//! `investigating`.

use crate::incident::{IncidentStatus, RunState};
use crate::plan::Phase;

/// What the lifecycle needs to know of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incident {
    pub status: IncidentStatus,
    pub escalated: bool,
}

/// Something that happened to an incident.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    RunStarted {
        runbook: &'a str,
        phase: Phase,
    },
    RunFinished {
        runbook: &'a str,
        phase: Phase,
        state: RunState,
        summary: &'a str,
        /// Remediation runs of the incident that have not succeeded (nor been
        /// skipped or cancelled), counted once this run's state is recorded.
        remediation_not_succeeded: usize,
    },
    /// Alertmanager reports every alert of the incident resolved.
    AllAlertsResolved,
}

/// What to record: a new status (with its timeline entry) and whether the
/// incident becomes escalated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: IncidentStatus,
    pub escalate: bool,
    pub author: &'static str,
    pub message: String,
}

/// The transition `event` causes for `incident`, if any.
#[must_use]
pub fn next(incident: Incident, event: Event<'_>) -> Option<Transition> {
    let runbookd = |status, escalate, message: String| Transition {
        status,
        escalate,
        author: "runbookd",
        message,
    };
    match event {
        Event::RunStarted { runbook, phase } => (incident.status == IncidentStatus::Investigating
            && !incident.escalated
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
            state: state @ (RunState::Failed | RunState::TimedOut),
            summary,
            ..
        } => Some(runbookd(
            IncidentStatus::Investigating,
            true,
            format!(
                "escalated: runbook `{runbook}` {} ({summary})",
                state.words()
            ),
        )),
        Event::RunFinished {
            state: RunState::Succeeded | RunState::SucceededWithFailures,
            remediation_not_succeeded: 0,
            ..
        } if !incident.escalated && incident.status != IncidentStatus::Monitoring => {
            Some(runbookd(
                IncidentStatus::Monitoring,
                false,
                "monitoring: every run of the incident succeeded".to_owned(),
            ))
        }
        Event::RunFinished { .. } => None,
        Event::AllAlertsResolved => Some(Transition {
            status: IncidentStatus::Resolved,
            escalate: false,
            author: "alertmanager",
            message: "resolved: Alertmanager reports every alert of the incident resolved"
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Incident = Incident {
        status: IncidentStatus::Investigating,
        escalated: false,
    };

    fn finished(state: RunState, not_succeeded: usize) -> Event<'static> {
        Event::RunFinished {
            runbook: "disk",
            phase: Phase::Remediation,
            state,
            summary: "`df` failed",
            remediation_not_succeeded: not_succeeded,
        }
    }

    fn at(status: IncidentStatus, escalated: bool) -> Incident {
        Incident { status, escalated }
    }

    #[test]
    fn a_remediation_run_starting_identifies_the_incident() {
        let started = Event::RunStarted {
            runbook: "disk",
            phase: Phase::Remediation,
        };
        let t = next(OPEN, started).unwrap();
        assert_eq!(t.status, IncidentStatus::Identified);
        assert_eq!(t.message, "identified: runbook `disk` is running");
        // Not once escalated, not for on_resolved runs, not from later states.
        assert_eq!(next(at(IncidentStatus::Investigating, true), started), None);
        assert_eq!(next(at(IncidentStatus::Monitoring, false), started), None);
        let resolution = Event::RunStarted {
            runbook: "disk",
            phase: Phase::Resolution,
        };
        assert_eq!(next(OPEN, resolution), None);
    }

    #[test]
    fn a_failed_or_timed_out_run_escalates_back_to_investigating() {
        for state in [RunState::Failed, RunState::TimedOut] {
            let t = next(at(IncidentStatus::Monitoring, false), finished(state, 1)).unwrap();
            assert!(t.escalate);
            assert_eq!(t.status, IncidentStatus::Investigating);
            assert!(
                t.message.starts_with("escalated: runbook `disk` "),
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
                at(IncidentStatus::Identified, true),
                finished(RunState::Succeeded, 0)
            ),
            None,
            "an escalated incident stays with people"
        );
        assert_eq!(
            next(
                at(IncidentStatus::Monitoring, false),
                finished(RunState::Succeeded, 0)
            ),
            None
        );
        for quiet in [
            RunState::Cancelled,
            RunState::Skipped,
            RunState::Interrupted,
            RunState::Planned,
        ] {
            assert_eq!(next(ident, finished(quiet, 0)), None, "{quiet}");
        }
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
            (t.status, t.author),
            (IncidentStatus::Resolved, "alertmanager")
        );
    }
}
