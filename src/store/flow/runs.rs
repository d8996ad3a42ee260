//! A claimed run's life after its claim: leases, live output, progress,
//! its end or pause, takeover by reaping, and cancellation. Every write
//! names the run's fence and writes nothing once it moved on.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{try_join, try_join_all};

use super::incidents::{noted, run_note, RunNote};
use super::{approvals, outbox, Driver, Op};
use crate::approval::ApprovalState;
use crate::incident::notices::Happened;
use crate::incident::{IncidentId, RunState};
use crate::lifecycle;
use crate::plan::Phase;
use crate::runbook::notify::{Event, Unless};
use crate::store::driver::{RunContext, UnnotedStart};
use crate::store::types::{json, leftover_record, run_detail, say, text, Leftover, Tally};
use crate::store::{
    ClaimRequest, Claimed, FinishOutcome, Finished, Heartbeat, Lease, Reap, Reaped, StoreError,
};

/// Claims queued runs for `req.owner`, within the cluster's cap, this
/// replica's free slots and each runbook's `concurrency`; each claimed run
/// gets an owner, a lease and a new fence. The driver serializes claimers;
/// a run is taken only while it is still queued (one cancelled since it
/// was read is left, and this claim starts fewer).
pub(in crate::store) async fn claim<D: Driver>(
    d: &D,
    req: &ClaimRequest,
) -> Op<Vec<Claimed>, D::Fail> {
    // The lock, then the counts and the queue's first page, sent together:
    // the driver executes them in this order, the reads once the lock is
    // held. When runbooks at their concurrency fill the page, the next one
    // leaves their runs out: a claim reads at most one page more than the
    // runbooks it finds full, however long their queues.
    let slots = i64::from(req.cluster_max).min(i64::from(req.free));
    let page = slots * 2 + 8;
    let ((), (per_runbook, mut queued)) = try_join(d.claim_lock(), d.claim_view(page)).await?;
    let running: i64 = per_runbook.iter().map(|(_, n)| i64::from(*n)).sum();
    let free = (i64::from(req.cluster_max) - running).min(i64::from(req.free));
    let free = usize::try_from(free).unwrap_or(0);
    let mut per_runbook: HashMap<String, u32> = per_runbook.into_iter().collect();
    let room = |runbook: &str, n: u32| n < req.concurrency.get(runbook).copied().unwrap_or(1);
    let mut chosen = Vec::new();
    while chosen.len() < free {
        let Some(&(last, _)) = queued.last() else {
            break;
        };
        let full = i64::try_from(queued.len()).unwrap_or(i64::MAX) >= page;
        for (id, runbook) in queued {
            if chosen.len() >= free {
                break;
            }
            let n = per_runbook.entry(runbook.clone()).or_default();
            if room(&runbook, *n) {
                *n += 1;
                chosen.push(id);
            }
        }
        if !full || chosen.len() >= free {
            break;
        }
        let skip: Vec<String> = per_runbook
            .iter()
            .filter(|(runbook, n)| !room(runbook, **n))
            .map(|(runbook, _)| runbook.clone())
            .collect();
        queued = d.queued(last, page, &skip).await?;
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    // Taken together (PostgreSQL sends the statements together), in order.
    // Their starts are noted after the claim (see [`note_start`]), so
    // that claimers wait on none of it.
    let taken = try_join_all(chosen.iter().map(|&id| async move {
        Ok::<_, D::Fail>(d.take(id, &req.owner, req.lease).await?.map(|t| (id, t)))
    }))
    .await?;
    let mut claimed = Vec::with_capacity(taken.len());
    for (id, (run, taken)) in taken.into_iter().flatten() {
        let resume = if taken.resumed {
            approvals::resume(d, id).await?
        } else {
            None
        };
        claimed.push(Claimed {
            lease: Lease {
                run_id: id,
                fence: taken.fence,
            },
            attempt: taken.attempt,
            incident: IncidentId(run.incident),
            severity: run.severity,
            runbook: run.runbook,
            fingerprint: run.fingerprint,
            starts_at: run.starts_at,
            phase: run.phase,
            body: run.body,
            shadow: run.shadow,
            resume,
            rerun_of: run.rerun_of,
        });
    }
    Ok(claimed)
}

/// Notes a taken run's start on its incident, unless it was noted already
/// (with `fence`, only while the run holds it): its timeline entry, the
/// status it moves the incident to, and the notifications its rules ask
/// for. A run's owner notes it once the run has run for a moment; a run
/// that ended sooner has it noted by its end, in the same transaction,
/// and a run taken over by the takeover. So a start is noted once, and
/// a crash loses none.
pub(in crate::store) async fn note_start<D: Driver>(
    d: &D,
    run: i64,
    fence: Option<i64>,
) -> Op<(), D::Fail> {
    let ((), unnoted) = try_join(d.lock_run_incident(run), d.start_unnoted(run, fence)).await?;
    if let Some((start, cx)) = unnoted {
        noted_start(d, run, start, cx).await?;
    }
    Ok(())
}

/// Writes a start [`Driver::start_unnoted`] gave.
async fn noted_start<D: Driver>(
    d: &D,
    id: i64,
    run: UnnotedStart,
    cx: RunContext,
) -> Op<(), D::Fail> {
    let (incident, now, note) = start_note(d, id, run, cx).await?;
    noted(d, incident, now, &[note]).await?;
    Ok(())
}

/// A start [`Driver::start_unnoted`] gave, with the notifications its
/// rules ask for queued: its incident, that incident now, and the note to
/// write on it.
async fn start_note<D: Driver>(
    d: &D,
    id: i64,
    run: UnnotedStart,
    cx: RunContext,
) -> Op<(i64, lifecycle::Incident, RunNote), D::Fail> {
    // The decision it resumes after.
    let decided = if run.resumed {
        d.last_approval(id)
            .await?
            .filter(|a| a.state != ApprovalState::Pending && a.state != ApprovalState::Cancelled)
    } else {
        None
    };
    let (note, what) = if let Some(a) = &decided {
        let note = say::resumed(id, &run.runbook, a, &run.owner);
        (note, None)
    } else {
        let started = say::started(
            id,
            &run.runbook,
            run.phase,
            &run.fingerprint,
            &run.owner,
            run.attempt,
        );
        let what = Happened {
            event: Event::RunStarted,
            runbook: Some(&run.runbook),
            run_id: Some(id),
            step: None,
            detail: started.clone(),
        };
        (started, Some(what))
    };
    let rules = outbox::read_policies(cx.policies)?;
    let tally = Tally::of(cx.remediation);
    if let Some(what) = &what {
        let origin = (run.notification, run.fingerprint.as_str());
        outbox::enqueue_with(d, run.incident, &rules, what, Some(origin)).await?;
    }
    let event = lifecycle::Event::RunStarted {
        runbook: &run.runbook,
        phase: run.phase,
        failed_runs: tally.failed,
    };
    let note = RunNote::new(note, cx.now, event);
    Ok((run.incident, cx.now, note))
}

/// Renews the leases `owner` holds; reports the ones it lost and the ones
/// whose cancellation was requested.
pub(in crate::store) async fn heartbeat<D: Driver>(
    d: &D,
    owner: &str,
    runs: &[Lease],
    lease: Duration,
) -> Op<Heartbeat, D::Fail> {
    let held: std::collections::HashMap<i64, bool> =
        d.renew(owner, runs, lease).await?.into_iter().collect();
    let mut beat = Heartbeat::default();
    for l in runs {
        match held.get(&l.run_id) {
            None => beat.lost.push(l.run_id),
            Some(true) => beat.cancel.push(l.run_id),
            Some(false) => {}
        }
    }
    Ok(beat)
}

/// Appends live output of a running step (nothing when fenced).
pub(in crate::store) async fn append_output<D: Driver>(
    d: &D,
    lease: Lease,
    chunks: &[(String, &'static str, Vec<u8>)],
) -> Op<(), D::Fail> {
    if !d.holds(lease).await? {
        return Ok(());
    }
    for (step, stream, bytes) in chunks {
        d.output_insert(lease.run_id, step, stream, bytes).await?;
    }
    Ok(())
}

/// Stores a running run's steps so far, if its fence holds.
pub(in crate::store) async fn progress<D: Driver>(
    d: &D,
    lease: Lease,
    json: &str,
) -> Op<(), D::Fail> {
    d.set_progress(lease, json).await
}

/// Records a finished run and moves its incident along, if its fence holds.
pub(in crate::store) async fn finish<D: Driver>(d: &D, f: &Finished) -> Op<FinishOutcome, D::Fail> {
    let instead;
    let f = match (f.state, &f.awaiting) {
        (RunState::AwaitingApproval, Some(r)) => {
            note_start(d, f.lease.run_id, Some(f.lease.fence)).await?;
            let paused = d
                .await_approval(f.lease, &json(&f.result), &f.summary)
                .await?;
            if let Some(run) = paused {
                let origin = (run.notification, run.fingerprint.as_str());
                approvals::pause(d, run.incident, f.lease.run_id, &run.runbook, r, origin).await?;
                return Ok(FinishOutcome::Recorded);
            }
            // Cancelled while it ran: it ends so, and asks nobody.
            instead = f.cancelled_instead();
            &instead
        }
        _ => f,
    };
    // A start not noted yet (a short run) is noted with the end, its
    // entries before the end's, written together; the end moves the
    // incident on from where the start left it. The lock, then the end
    // with the start, sent together: the driver executes them in this
    // order.
    let ((), (start, end)) = try_join(
        d.lock_run_incident(f.lease.run_id),
        d.end_run_and_start(f.lease, f.state, &json(&f.result), &f.summary),
    )
    .await?;
    let start = match start {
        Some((start, cx)) => Some(start_note(d, f.lease.run_id, start, cx).await?),
        None => None,
    };
    let Some((run, cx)) = end else {
        if let Some((incident, now, note)) = start {
            noted(d, incident, now, &[note]).await?;
        }
        return Ok(FinishOutcome::Fenced);
    };
    let rules = outbox::read_policies(cx.policies)?;
    let open_checklist = f.result.as_ref().map_or(0, |r| r.open_checklist().count());
    let succeeded = run.phase == Phase::Remediation
        && matches!(
            f.state,
            RunState::Succeeded | RunState::SucceededWithFailures
        );
    // Escalations are armed from the incident's rules only: without rules
    // there is nothing to cancel.
    let disarm = async {
        if succeeded && !rules.0.is_empty() {
            let why = format!("run #{} of `{}` succeeded", f.lease.run_id, run.runbook);
            outbox::disarm(d, run.incident, Unless::Succeeded, Some(&run.runbook), &why).await?;
        }
        Ok(())
    };
    let mut notes = Vec::with_capacity(2);
    notes.extend(start.map(|(_, _, note)| note));
    let at_end = notes.first().map_or(cx.now, |n| n.after(cx.now));
    notes.push(end_note(
        at_end,
        cx.remediation,
        f.lease.run_id,
        (&run.runbook, run.phase),
        f.state,
        &f.summary,
        open_checklist,
    ));
    try_join(noted(d, run.incident, cx.now, &notes), disarm).await?;
    let origin = (run.notification, run.fingerprint.as_str());
    for what in crate::lifecycle::run_ended(
        &run.runbook,
        f.lease.run_id,
        f.state,
        &f.summary,
        f.result.as_ref(),
    ) {
        outbox::enqueue_with(d, run.incident, &rules, &what, Some(origin)).await?;
    }
    Ok(FinishOutcome::Recorded)
}

/// A run's end on its incident, from `now` (as read in this transaction;
/// `remediation`, its remediation runs' states with this run's end): its
/// timeline entry, and the lifecycle's next step.
fn end_note(
    now: lifecycle::Incident,
    remediation: Vec<RunState>,
    id: i64,
    (runbook, phase): (&str, Phase),
    state: RunState,
    summary: &str,
    open_checklist: usize,
) -> RunNote {
    let tally = Tally::of(remediation);
    let event = lifecycle::Event::RunFinished {
        runbook,
        phase,
        state,
        summary,
        remediation_not_succeeded: tally.not_succeeded,
        open_checklist,
    };
    RunNote::new(say::finished(id, runbook, state, summary), now, event)
}

/// Takes running runs back: idempotent ones are queued again, the others
/// end `interrupted` (or `cancelled`, when that was asked) with what is
/// known of them; either way their fence moves on.
pub(in crate::store) async fn reap<D: Driver>(d: &D, scope: &Reap) -> Op<Reaped, D::Fail> {
    let mut reaped = Reaped::default();
    let expired = matches!(scope, Reap::Expired);
    for listed in d.running(expired).await? {
        // Its incident, then the run, as every writer of both locks them,
        // and the run read again under both: its owner may have ended it
        // or renewed its lease meanwhile, or another reaper taken it.
        let ((), run) = try_join(
            d.lock_run_incident(listed.id),
            d.running_run(listed.id, expired),
        )
        .await?;
        let Some(run) = run else { continue };
        // Its start first, if its owner had not noted it yet.
        note_start(d, run.id, None).await?;
        let owner = run.owner.as_deref().unwrap_or_default();
        let state = match lifecycle::taken(run.idempotent, run.cancel_requested) {
            lifecycle::Taken::Ended(state) => state,
            lifecycle::Taken::Requeued => {
                d.drop_output(run.id).await?;
                d.requeue(run.id).await?;
                let message = match scope {
                    Reap::All { .. } => {
                        say::requeued_after_restart(run.id, &run.runbook, run.attempt + 1)
                    }
                    Reap::Expired => say::requeued(run.id, &run.runbook, owner, run.attempt + 1),
                };
                run_note(d, run.incident, &message).await?;
                reaped.requeued += 1;
                continue;
            }
        };
        let output = d.run_output(run.id).await?;
        d.drop_output(run.id).await?;
        let why = match scope {
            Reap::All { why } => why.clone(),
            Reap::Expired => say::lease_lost(owner),
        };
        let (why, record) = leftover_record(
            &why,
            &Leftover {
                runbook: &run.runbook,
                fingerprint: &run.fingerprint,
                phase: run.phase,
                started: run.started,
                heard: run.heard.filter(|_| matches!(scope, Reap::Expired)),
                progress: run.progress.as_deref(),
                output: &output,
            },
        );
        d.end_taken(run.id, state, &why, record.as_deref()).await?;
        let detail = run_detail(record.as_deref()).map_err(StoreError::Invalid)?;
        let open_checklist = detail.as_ref().map_or(0, |r| r.open_checklist().count());
        let cx = d.run_context(run.incident).await?;
        let rules = outbox::read_policies(cx.policies)?;
        let note = end_note(
            cx.now,
            cx.remediation,
            run.id,
            (&run.runbook, run.phase),
            state,
            &why,
            open_checklist,
        );
        noted(d, run.incident, cx.now, &[note]).await?;
        for what in crate::lifecycle::run_ended(&run.runbook, run.id, state, &why, detail.as_ref())
        {
            outbox::enqueue_with(d, run.incident, &rules, &what, None).await?;
        }
        reaped.interrupted += 1;
    }
    if reaped.requeued > 0 {
        d.wake_claimers().await?;
    }
    Ok(reaped)
}

/// Cancels a run for a person: a queued or waiting run ends `cancelled`
/// now, a running one is asked to stop (its owner kills its steps and
/// records it).
pub(in crate::store) async fn cancel<D: Driver>(
    d: &D,
    id: i64,
    who: &str,
) -> Op<RunState, D::Fail> {
    // The incident first, then the run's row, as a run's start, end and
    // pause and an approval's decision lock them: no two of them deadlock.
    let ((), run) = try_join(d.lock_run_incident(id), d.run_to_cancel(id)).await?;
    let Some(run) = run else {
        return Err(StoreError::NotFound(format!("run {id}")).into());
    };
    let who = text(who);
    match lifecycle::cancel(run.state) {
        lifecycle::Cancel::EndNow => {
            let why = say::cancelled_by(&who, run.state);
            d.cancel_waiting(id, &why).await?;
            d.approvals_withdraw(id).await?;
            // The incident moves on as when a run ends.
            let cx = d.run_context(run.incident).await?;
            let note = end_note(
                cx.now,
                cx.remediation,
                id,
                (&run.runbook, run.phase),
                RunState::Cancelled,
                &why,
                0,
            );
            noted(d, run.incident, cx.now, &[note]).await?;
        }
        lifecycle::Cancel::AskOwner => {
            // A run in its first moments may not have its start noted yet:
            // noted now, so that the timeline says it started before it
            // says it is being cancelled.
            note_start(d, id, None).await?;
            d.request_cancel(id).await?;
            run_note(
                d,
                run.incident,
                &say::cancel_requested(id, &run.runbook, &who),
            )
            .await?;
        }
        lifecycle::Cancel::AlreadyEnded => {
            return Err(StoreError::Conflict(format!(
                "run {id} already ended ({}): there is nothing to cancel",
                run.state
            ))
            .into())
        }
    }
    Ok(run.state)
}
