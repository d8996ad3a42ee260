//! People working an incident: its commander, the checklist items they
//! tick, the runs they re-run.

use super::{incidents::advance, outbox, Driver, Op};
use crate::incident::{ChecklistItem, IncidentId};
use crate::lifecycle;
use crate::store::types::{
    checklist, pick, run_detail, say, text, ChecklistRun, HandOver, Rerun, Tally, Tick, Ticks,
};
use crate::store::StoreError;

/// The lifecycle's count of `incident`'s current remediation runs.
pub(in crate::store) async fn tally<D: Driver>(d: &D, incident: i64) -> Op<Tally, D::Fail> {
    Ok(Tally::of(d.remediation_states(incident).await?))
}

/// `incident`'s checklist as the store holds it now.
async fn items<D: Driver>(d: &D, incident: i64, ticks: &Ticks) -> Op<Vec<ChecklistItem>, D::Fail> {
    let rows = d.checklist_runs(incident).await?;
    let details = rows
        .iter()
        .map(|(_, _, _, raw)| run_detail(raw.as_deref()).map_err(StoreError::Invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let runs: Vec<ChecklistRun<'_>> = rows
        .iter()
        .zip(&details)
        .map(|((id, runbook, lineage, _), d)| ChecklistRun {
            id: *id,
            runbook,
            lineage: *lineage,
            result: d.as_ref(),
        })
        .collect();
    Ok(checklist(&runs, ticks))
}

/// Ticks (or unticks) a checklist item; the lifecycle hears of it.
pub(in crate::store) async fn tick<D: Driver>(
    d: &D,
    id: IncidentId,
    t: &Tick,
) -> Op<ChecklistItem, D::Fail> {
    if !d.lock_incident(id.0).await? {
        return Err(StoreError::NotFound(id.to_string()).into());
    }
    let who = text(&t.who);
    let mut ticks = d.ticks(id.0).await?;
    let before = items(d, id.0, &ticks).await?;
    let item = pick(&before, t, id)?.clone();
    if item.is_open() != t.done {
        return Ok(item);
    }
    let key = (item.run_id.0, item.step.clone());
    if t.done {
        let at = d.tick_insert(item.run_id.0, &item.step, &who).await?;
        ticks.insert(key.clone(), (who.clone(), at));
    } else {
        d.tick_delete(item.run_id.0, &item.step).await?;
        ticks.remove(&key);
    }
    let message = say::ticked(&who, item.run_id.0, &item.step, &item.text, t.done);
    d.timeline(id.0, &who, "update", &message, None).await?;
    d.touch(id.0).await?;
    let after = items(d, id.0, &ticks).await?;
    let not_succeeded = tally(d, id.0).await?.not_succeeded;
    advance(
        d,
        id.0,
        lifecycle::Event::ChecklistChanged {
            open: after.iter().filter(|i| i.is_open()).count(),
            remediation_not_succeeded: not_succeeded,
        },
    )
    .await?;
    Ok(after
        .into_iter()
        .find(|i| (i.run_id.0, &i.step) == (key.0, &key.1))
        .unwrap_or(item))
}

/// Makes `to` the incident commander; handing command over is taking the
/// incident on, so an unacknowledged incident is acknowledged by `by`.
pub(in crate::store) async fn hand_over<D: Driver>(
    d: &D,
    id: IncidentId,
    to: &str,
    by: &str,
) -> Op<HandOver, D::Fail> {
    let (to, by) = (text(to), text(by));
    let Some((mut previous, acked)) = d.command(id.0).await? else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    if !acked {
        outbox::acknowledge(d, id, &by).await?;
        previous = d.commander(id.0).await?;
    }
    if previous.as_deref() == Some(to.as_str()) {
        return Ok(HandOver {
            commander: to,
            previous: None,
            changed: false,
        });
    }
    d.set_commander(id.0, &to).await?;
    let message = say::handed_over(&by, previous.as_deref(), &to);
    d.timeline(id.0, &by, "update", &message, None).await?;
    Ok(HandOver {
        commander: to,
        previous,
        changed: true,
    })
}

/// Queues a finished run again, as the next of its lineage.
pub(in crate::store) async fn rerun<D: Driver>(d: &D, run: i64, who: &str) -> Op<Rerun, D::Fail> {
    let who = text(who);
    let Some(src) = d.rerun_source(run).await? else {
        return Err(StoreError::NotFound(format!("run {run}")).into());
    };
    let busy = d
        .run_in_progress(&src.runbook, &src.fingerprint, &src.phase)
        .await?;
    crate::store::types::may_rerun(
        run,
        src.state,
        IncidentId(src.incident),
        src.status,
        &src.runbook,
        busy,
    )?;
    // The run key and the one-in-progress index make a concurrent second
    // re-run of the same run fail here rather than queue twice.
    let id = d.insert_rerun(&src).await?;
    d.timeline(
        src.incident,
        &who,
        "run",
        &say::rerun(&who, run, &src.runbook, id),
        None,
    )
    .await?;
    d.wake_claimers().await?;
    d.touch(src.incident).await?;
    Ok(Rerun {
        incident: IncidentId(src.incident),
        run: id,
        rerun_of: src.lineage,
    })
}
