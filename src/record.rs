//! Run records: what a run did, step by step and attempt by attempt, as
//! the executor makes them, the store keeps them and the UI, the API,
//! notifications and postmortems read them. Below all of those, so that none
//! of them reaches into the executor for its records: one `is_failure()`
//! decides "did this step fail?" for all of them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plan::{Phase, StepPlan};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    SucceededWithFailures,
    Failed,
    TimedOut,
    Cancelled,
    /// Paused on an approval step (`RunResult.awaiting` says which); the
    /// store keeps the steps so far until a decision resumes the run.
    AwaitingApproval,
    /// Its owner stopped while it ran (a replica that died, runbookd
    /// killed): the record holds the steps recorded so far.
    Interrupted,
    /// Not run: its runbook asks its service's error-budget gate
    /// (`requires`/`risk` on the runbook, `on_frozen: skip`), which said no
    /// (`RunResult.held` says why).
    Skipped,
}

/// Which list a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    Steps,
    OnFailure,
    OnResolved,
}

/// One process run of a step.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub outcome: StepOutcome,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    /// The last bytes of stdout, as `steps.NAME.stdout` shows them.
    #[serde(skip)]
    pub stdout_tail: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub sandbox: SandboxRecord,
    pub stragglers_killed: bool,
    pub output_abandoned: bool,
}

impl Attempt {
    /// An attempt that ran no process (a silence or verify step): what it
    /// did is its output, and it ends now.
    #[must_use]
    pub fn without_process(
        attempt: u32,
        outcome: StepOutcome,
        (started, duration_ms): (DateTime<Utc>, u64),
        stdout: String,
        stderr: String,
    ) -> Attempt {
        Attempt {
            attempt,
            outcome,
            started,
            ended: Utc::now(),
            duration_ms,
            stdout_bytes: stdout.len() as u64,
            stderr_bytes: stderr.len() as u64,
            stdout_tail: stdout.clone(),
            stdout,
            stderr,
            sandbox: SandboxRecord::default(),
            stragglers_killed: false,
            output_abandoned: false,
        }
    }
}

/// What happened to one step: its rendered command and every attempt.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub phase: StepPhase,
    /// The rendered step, as `--plan` shows it.
    pub plan: StepPlan,
    /// `None` for a manual step: an open checklist item.
    pub outcome: Option<StepOutcome>,
    /// A silence step: the Alertmanager silence it made (or found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_id: Option<String>,
    /// An approval step: the decision that let the run go on, or stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::Approval>,
    pub attempts: Vec<Attempt>,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub duration_ms: u64,
}

/// A finished run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunResult {
    pub runbook: String,
    pub fingerprint: String,
    pub phase: Phase,
    pub outcome: RunOutcome,
    pub steps: Vec<StepRecord>,
    /// Texts of the manual steps reached: open checklist items.
    pub checklist: Vec<String>,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// Time spent executing (a wait for approval is not counted).
    pub duration_ms: u64,
    /// A paused run (`AwaitingApproval`): the approval it waits for.
    #[serde(skip)]
    pub awaiting: Option<crate::approval::Request>,
    /// A drill stopped by one of its `safeguards:`: which, and the
    /// measurement that tripped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// A run whose runbook's gate said no (`on_frozen: skip | fail`): why
    /// none of its steps ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// A running run's steps so far, stored as it goes (a server run), so that a
/// run whose owner stops (a replica that died, runbookd killed) keeps what
/// it did, and says which step was running.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Progress {
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningStep>,
}

/// The step a run is in.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunningStep {
    pub plan: StepPlan,
    pub attempt: u32,
    pub since: DateTime<Utc>,
}

impl Progress {
    /// The record of a run whose owner stopped: the steps it recorded, and
    /// the one it was in, `Interrupted` with `why` and the output stored of
    /// it (`stdout`, `stderr`).
    #[must_use]
    pub fn interrupted(
        self,
        run: (&str, &str, Phase),
        started: DateTime<Utc>,
        why: &str,
        output: (String, String),
    ) -> RunResult {
        let now = Utc::now();
        let mut steps = self.steps;
        if let Some(r) = self.running {
            let outcome = StepOutcome::Interrupted {
                reason: why.to_owned(),
            };
            let ms = u64::try_from((now - r.since).num_milliseconds().max(0)).unwrap_or(0);
            steps.push(StepRecord {
                name: r.plan.name.clone(),
                phase: StepPhase::Steps,
                outcome: Some(outcome.clone()),
                silence_id: None,
                approval: None,
                attempts: vec![Attempt {
                    attempt: r.attempt,
                    outcome,
                    started: r.since,
                    ended: now,
                    duration_ms: ms,
                    stdout_bytes: output.0.len() as u64,
                    stderr_bytes: output.1.len() as u64,
                    stdout_tail: String::new(),
                    stdout: output.0,
                    stderr: output.1,
                    sandbox: SandboxRecord::default(),
                    stragglers_killed: false,
                    output_abandoned: false,
                }],
                plan: r.plan,
                started: r.since,
                ended: now,
                duration_ms: ms,
            });
        }
        let checklist = steps
            .iter()
            .filter(|s| s.outcome.is_none())
            .map(|s| s.plan.text.clone().unwrap_or_default())
            .collect();
        RunResult {
            runbook: run.0.to_owned(),
            fingerprint: run.1.to_owned(),
            phase: run.2,
            outcome: RunOutcome::Interrupted,
            steps,
            checklist,
            started,
            ended: now,
            duration_ms: u64::try_from((now - started).num_milliseconds().max(0)).unwrap_or(0),
            awaiting: None,
            aborted: None,
            held: None,
        }
    }
}

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed {
        exit_code: i32,
    },
    Signalled {
        signal: i32,
        cause: Option<String>,
    },
    TimedOut {
        after_ms: u64,
        cause: String,
    },
    SpawnFailed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    Cancelled,
    /// An approval step the run is paused on (only in a paused run's record).
    AwaitingApproval,
    /// An approval step denied, by an operator or by its timeout.
    Denied {
        reason: String,
    },
    /// A verify step measured its `failure` condition: the remediation did
    /// not work.
    Unverified {
        reason: String,
    },
    /// The step was running when its run's owner stopped (a replica that
    /// died, runbookd killed): whether it finished is unknown.
    Interrupted {
        reason: String,
    },
}

impl StepOutcome {
    #[must_use]
    pub fn succeeded(&self) -> bool {
        matches!(self, StepOutcome::Succeeded)
    }

    /// Whether the step failed (ran and did not succeed, was denied, or
    /// could not start); a skipped, cancelled or waiting step did not.
    #[must_use]
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            StepOutcome::Failed { .. }
                | StepOutcome::Signalled { .. }
                | StepOutcome::TimedOut { .. }
                | StepOutcome::SpawnFailed { .. }
                | StepOutcome::Denied { .. }
                | StepOutcome::Unverified { .. }
                | StepOutcome::Interrupted { .. }
        )
    }

    /// The value templates see as `steps.NAME.status`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "succeeded",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::Signalled { .. } => "signalled",
            StepOutcome::TimedOut { .. } => "timed_out",
            StepOutcome::SpawnFailed { .. } => "spawn_failed",
            StepOutcome::Skipped { .. } => "skipped",
            StepOutcome::Cancelled => "cancelled",
            StepOutcome::AwaitingApproval => "awaiting_approval",
            StepOutcome::Denied { .. } => "denied",
            StepOutcome::Unverified { .. } => "unverified",
            StepOutcome::Interrupted { .. } => "interrupted",
        }
    }

    /// What people read beside the status: `exit status 2`, `signal 9:
    /// memory limit exceeded`, the timeout's cause, why it was skipped or
    /// could not start. The UI and `incidents show` print this.
    #[must_use]
    pub fn detail(&self) -> Option<String> {
        match self {
            StepOutcome::Failed { exit_code } => Some(format!("exit status {exit_code}")),
            StepOutcome::Signalled { signal, cause } => Some(match cause {
                Some(c) => format!("signal {signal}: {c}"),
                None => format!("signal {signal}"),
            }),
            StepOutcome::TimedOut { cause, .. } => Some(format!("timed out: {cause}")),
            StepOutcome::SpawnFailed { reason }
            | StepOutcome::Skipped { reason }
            | StepOutcome::Denied { reason }
            | StepOutcome::Unverified { reason }
            | StepOutcome::Interrupted { reason } => Some(reason.clone()),
            StepOutcome::Succeeded | StepOutcome::Cancelled | StepOutcome::AwaitingApproval => None,
        }
    }

    /// The outcome as the end of a sentence about the step (postmortems):
    /// `failed with exit status 2`, `was skipped: …`.
    #[must_use]
    pub fn sentence(&self) -> String {
        match self {
            StepOutcome::Succeeded => "succeeded".into(),
            StepOutcome::Failed { exit_code } => format!("failed with exit status {exit_code}"),
            StepOutcome::Signalled { signal, cause } => match cause {
                Some(c) => format!("was killed by signal {signal} ({c})"),
                None => format!("was killed by signal {signal}"),
            },
            StepOutcome::TimedOut { cause, .. } => format!("timed out ({cause})"),
            StepOutcome::SpawnFailed { reason } => format!("could not start: {reason}"),
            StepOutcome::Skipped { reason } => format!("was skipped: {reason}"),
            StepOutcome::Cancelled => "was cancelled".into(),
            StepOutcome::AwaitingApproval => "waits for approval".into(),
            StepOutcome::Denied { reason } => format!("was denied: {reason}"),
            StepOutcome::Unverified { reason } => format!("did not verify: {reason}"),
            StepOutcome::Interrupted { reason } => format!("was interrupted: {reason}"),
        }
    }

    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            StepOutcome::Succeeded => Some(0),
            StepOutcome::Failed { exit_code } => Some(*exit_code),
            _ => None,
        }
    }
}

/// Which layers a step ran with, and which default layers the host lacked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SandboxRecord {
    pub applied: Vec<String>,
    pub unavailable: Vec<String>,
}

/// A paused run to resume: the steps it recorded before pausing (the last
/// is the approval step) and the decision on that step.
#[derive(Debug, Clone)]
pub struct Resume {
    pub prior: Box<crate::record::RunResult>,
    pub approval: crate::approval::Approval,
}

/// A claimed run's identity for writes: every write of a run names its fence,
/// and a write whose fence is no longer the run's writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub run_id: i64,
    pub fence: i64,
}
