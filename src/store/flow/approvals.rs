//! Approval steps: pausing a run, deciding (the first decision wins),
//! deadlines, withdrawing and resuming.

use futures_util::future::try_join;

use super::{incidents::run_note, outbox, Driver, Op};
use crate::approval::{say, Approval, ApprovalState, Decision, Request};
use crate::incident::notices::Happened;
use crate::incident::RunDetail;
use crate::record::Resume;
use crate::runbook::notify::Event;
use crate::store::types::{run_detail, text};
use crate::store::{Result, StoreError};

/// Records a run's pause on an approval step (its fence checked by the
/// caller): the approval, the timeline and `approval_requested`.
pub(in crate::store) async fn pause<D: Driver>(
    d: &D,
    incident: i64,
    run: i64,
    runbook: &str,
    r: &Request,
    origin: (i64, &str),
) -> Op<(), D::Fail> {
    let deadline = d.approval_insert(run, incident, runbook, r).await?;
    let message = say::requested(run, runbook, r, &deadline);
    run_note(d, incident, &message).await?;
    outbox::enqueue(
        d,
        incident,
        &Happened {
            event: Event::ApprovalRequested,
            runbook: Some(runbook),
            run_id: Some(run),
            step: Some(&r.step),
            detail: message,
        },
        Some(origin),
    )
    .await?;
    Ok(())
}

/// Queues a decided run again, and says so on its incident's timeline.
async fn decided<D: Driver>(d: &D, a: &Approval, author: &str) -> Op<(), D::Fail> {
    let Some(incident) = d.requeue_awaiting(a.run_id.0).await? else {
        tracing::warn!(
            run = a.run_id.0,
            "an approval was decided for a run that no longer waits"
        );
        return Ok(());
    };
    d.timeline(incident, author, "approval", &say::decided(a), None)
        .await?;
    d.touch(incident).await?;
    d.wake_claimers().await
}

/// The first decision on a run's pending approval. A refusal is an answer
/// (`Ok(Err(…))`), so that the transaction that read it commits and
/// releases the run's lock at once.
pub(in crate::store) async fn decide<D: Driver>(
    d: &D,
    run: i64,
    approval: i64,
    decision: Decision,
    who: &str,
    comment: Option<&str>,
) -> Op<Result<Approval>, D::Fail> {
    let (who, comment) = (text(who), comment.map(text));
    // The run's incident, then the run: the order every writer of a run
    // and its incident locks them in (see `runs::cancel`).
    try_join(d.lock_run_incident(run), d.lock_run(run)).await?;
    if let Some(a) = d
        .approval_decide(run, approval, decision, &who, comment.as_deref())
        .await?
    {
        decided(d, &a, &who).await?;
        return Ok(Ok(a));
    }
    let Some(state) = d.run_state(run).await? else {
        return Ok(Err(StoreError::NotFound(format!("run {run}"))));
    };
    let last = d.last_approval(run).await?;
    Ok(Err(StoreError::Conflict(conflict(
        run,
        approval,
        state,
        last.as_ref(),
    ))))
}

/// Decides the approvals whose deadline passed, by their `on_timeout`.
pub(in crate::store) async fn expire<D: Driver>(d: &D) -> Op<usize, D::Fail> {
    let mut expired = 0;
    for (approval, run) in d.approvals_due().await? {
        // The run's incident, then the run, as every writer of both locks
        // them (see `runs::cancel`), and the approval decided under both.
        try_join(d.lock_run_incident(run), d.lock_run(run)).await?;
        if let Some(a) = d.approval_expire(approval).await? {
            decided(d, &a, "runbookd").await?;
            expired += 1;
        }
    }
    Ok(expired)
}

/// A queued run to resume: its steps before the pause and the decision.
pub(in crate::store) async fn resume<D: Driver>(d: &D, run: i64) -> Op<Option<Resume>, D::Fail> {
    let result = d.run_result(run).await?;
    let Some(RunDetail::Executed(prior)) =
        run_detail(result.as_deref()).map_err(StoreError::Invalid)?
    else {
        return Ok(None);
    };
    Ok(d.last_approval(run)
        .await?
        .filter(|a| a.state != ApprovalState::Pending && a.state != ApprovalState::Cancelled)
        .map(|approval| Resume { prior, approval }))
}

/// Why a run's approval cannot be decided now: the run (in `state`) is not
/// waiting, or `last`, its latest approval, was already decided.
#[must_use]
pub fn conflict(
    run: i64,
    asked: i64,
    state: crate::incident::RunState,
    last: Option<&Approval>,
) -> String {
    match last {
        // A decision on an earlier prompt is never applied to the next.
        Some(a) if a.id != asked => format!(
            "run {run}: approval {asked} is not the one it waits on{}; read the prompt before deciding",
            if a.state == ApprovalState::Pending {
                format!(": it now asks `{}` (approval {}) at step `{}`", a.prompt, a.id, a.step)
            } else {
                String::new()
            }
        ),
        Some(a)
            if a.state == ApprovalState::Pending
                && state == crate::incident::RunState::AwaitingApproval =>
        {
            format!(
            "run {run}: the approval of step `{}` reached its deadline ({}); on_timeout ({}) decides it",
            a.step, a.deadline, a.on_timeout
        )
        }
        Some(a) if a.state != ApprovalState::Pending => format!(
            "run {run}: the approval of step `{}` was already decided ({}); the first decision wins",
            a.step,
            a.sentence()
        ),
        _ => format!("run {run} is not waiting for approval (it is {})", state.as_str().replace('_', " ")),
    }
}
