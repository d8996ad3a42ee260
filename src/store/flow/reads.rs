//! Reads that put a record together from several statements, in one
//! snapshot (the caller's read transaction), and the SLO records written
//! beside incidents.

use super::{Driver, Op};
use crate::incident::notices as notify;
use crate::incident::notices::{Happened, Queue};
use crate::incident::{IncidentDetail, IncidentId, RunState};
use crate::runbook::notify::Event;
use crate::store::types::{checklist, text, ChecklistRun, PostmortemRequired};
use crate::store::StoreError;

/// Everything about one incident: a run that ends meanwhile is seen either
/// running or ended in every part of the record.
pub(in crate::store) async fn incident<D: Driver>(
    d: &D,
    id: IncidentId,
) -> Op<IncidentDetail, D::Fail> {
    let Some((summary, root_cause)) = d.summary(id.0).await? else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    let alerts = d.alerts_of(id.0).await?;
    let mut runs = d.runs_of(id.0).await?;
    for run in runs.iter_mut().filter(|r| r.state == RunState::Running) {
        run.live_output = d.live_output_of(run.id.0).await?;
    }
    let timeline = d.timeline_of(id.0).await?;
    let ticks = d.ticks(id.0).await?;
    let checklist = checklist(
        &runs.iter().map(ChecklistRun::of).collect::<Vec<_>>(),
        &ticks,
    );
    Ok(IncidentDetail {
        summary,
        root_cause,
        alerts,
        runs,
        timeline,
        checklist,
        notifications: d.messages_of(id.0).await?,
        escalations: d.escalations_of(id.0).await?,
        approvals: d.approvals_of(id.0).await?,
    })
}

/// Records what an incident cost its services' SLOs, once, with its note
/// on the timeline: `false` when it was already recorded (by this or
/// another replica).
pub(in crate::store) async fn record_slo_budget<D: Driver>(
    d: &D,
    id: IncidentId,
    budget: &str,
    affecting: Option<bool>,
    note: Option<&str>,
    required: Option<&PostmortemRequired>,
) -> Op<bool, D::Fail> {
    if !d.record_budget(id.0, &text(budget), affecting).await? {
        return Ok(false);
    }
    if let Some(note) = note {
        d.timeline(id.0, "runbookd", "slo", &text(note), None)
            .await?;
    }
    if let Some(r) = required {
        let reason = text(&r.reason);
        d.require_postmortem(id.0, &reason).await?;
        let detail = format!("postmortem required: {reason}");
        d.timeline(id.0, "runbookd", "postmortem", &detail, None)
            .await?;
        let at = chrono::Utc::now();
        for service in &r.services {
            d.service_timeline_insert(
                &text(service),
                "runbookd",
                "postmortem_required",
                &format!("{id} requires a postmortem: {reason}"),
                at,
            )
            .await?;
        }
        // The incident's own rules (`on: [postmortem_required]`), and the
        // policies' notifiers beside them, each once.
        let (rules, shadow) = super::outbox::policies(d, id.0).await?;
        let what = Happened {
            event: Event::PostmortemRequired,
            runbook: None,
            run_id: None,
            step: None,
            detail,
        };
        let mut queued = notify::queue(&rules, &what);
        for n in &r.notify {
            if !queued.iter().any(|q| q.notifier == *n) {
                queued.push(Queue {
                    notifier: n.clone(),
                    event: what.event,
                    runbook: None,
                    run_id: None,
                    step: None,
                    detail: what.detail.clone(),
                    template: None,
                });
            }
        }
        super::outbox::insert(d, id.0, &queued, shadow, None).await?;
    }
    Ok(true)
}

/// Replaces the shared SLO statuses: `(id, JSON)`, read at `at` in
/// `took_ms`.
pub(in crate::store) async fn put_slo_statuses<D: Driver>(
    d: &D,
    rows: &[(String, String)],
    at: chrono::DateTime<chrono::Utc>,
    took_ms: i64,
) -> Op<(), D::Fail> {
    d.slo_statuses_clear().await?;
    for (id, status) in rows {
        d.slo_status_insert(&text(id), &text(status), at, took_ms)
            .await?;
    }
    Ok(())
}
