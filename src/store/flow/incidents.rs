//! An incident's timeline and lifecycle, as every operation records them.

use super::{outbox, Driver, Op};
use crate::incident::IncidentStatus;
use crate::lifecycle;

/// A run's entry on its incident's timeline, by runbookd.
pub(in crate::store) async fn run_note<D: Driver>(
    d: &D,
    incident: i64,
    message: &str,
) -> Op<(), D::Fail> {
    d.timeline(incident, "runbookd", "run", message, None).await
}

/// Records what the lifecycle decides for an event of `incident` (read in
/// the same transaction): its status, on its timeline, and the
/// notifications and cancelled escalations of a resolution.
pub(in crate::store) async fn advance<D: Driver>(
    d: &D,
    incident: i64,
    event: lifecycle::Event<'_>,
) -> Op<(), D::Fail> {
    let now = d.lifecycle(incident).await?;
    let Some(t) = lifecycle::next(now, event) else {
        return Ok(());
    };
    d.set_status(incident, t.status, t.run_failed).await?;
    d.timeline(incident, t.author, "status", &t.message, Some(t.status))
        .await?;
    if t.status == IncidentStatus::Resolved && now.status != IncidentStatus::Resolved {
        outbox::resolved(d, incident, &t.message).await?;
    }
    Ok(())
}
