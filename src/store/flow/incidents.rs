//! An incident's timeline and lifecycle, as every operation records them.

use futures_util::future::try_join;

use super::{outbox, Driver, Op};
use crate::incident::{IncidentId, IncidentStatus, Update};
use crate::lifecycle;
use crate::store::types::text;
use crate::store::StoreError;

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
    try_join(
        d.set_status(incident, t.status, t.run_failed),
        d.timeline(incident, t.author, "status", &t.message, Some(t.status)),
    )
    .await?;
    moved(d, incident, now, &t).await?;
    Ok(())
}

/// A run's entry on its incident's timeline (by runbookd) and the
/// transition the lifecycle decides with it, before they are written.
pub(in crate::store) struct RunNote {
    pub note: String,
    pub change: Option<lifecycle::Transition>,
}

impl RunNote {
    /// `note`, and what the lifecycle decides for `event` from `now`.
    pub fn new(note: String, now: lifecycle::Incident, event: lifecycle::Event<'_>) -> RunNote {
        RunNote {
            change: lifecycle::next(now, event),
            note,
        }
    }

    /// The incident once this note is written, from `now`.
    pub fn after(&self, now: lifecycle::Incident) -> lifecycle::Incident {
        self.change.as_ref().map_or(now, |t| now.after(t))
    }
}

/// Writes run notes on `incident`, in order, from `now` (the incident as
/// read in this transaction): each one's entry and its status entry, and
/// the status they leave, all together (PostgreSQL: one statement); then
/// what each transition sets off, in order, once all are written (a run's
/// start never resolves an incident, so what its end's transition sets off
/// follows both notes, as it did when each was written alone). Gives the
/// incident as it is after.
pub(in crate::store) async fn noted<D: Driver>(
    d: &D,
    incident: i64,
    now: lifecycle::Incident,
    notes: &[RunNote],
) -> Op<lifecycle::Incident, D::Fail> {
    let entries: Vec<_> = notes
        .iter()
        .map(|n| (n.note.as_str(), n.change.as_ref()))
        .collect();
    d.run_noted(incident, &entries).await?;
    let mut now = now;
    for t in notes.iter().filter_map(|n| n.change.as_ref()) {
        now = moved(d, incident, now, t).await?;
    }
    Ok(now)
}

/// After `t` was recorded on the incident (`now` before it): a resolution
/// tells people and cancels escalations. Gives the incident as it is after.
async fn moved<D: Driver>(
    d: &D,
    incident: i64,
    now: lifecycle::Incident,
    t: &lifecycle::Transition,
) -> Op<lifecycle::Incident, D::Fail> {
    if t.status == IncidentStatus::Resolved && now.status != IncidentStatus::Resolved {
        outbox::resolved(d, incident, &t.message).await?;
    }
    Ok(now.after(t))
}

/// Adds a person's update to the timeline, and sets the status and root
/// cause it gives; resolving tells people and cancels escalations.
pub(in crate::store) async fn add_update<D: Driver>(
    d: &D,
    id: IncidentId,
    u: &Update,
) -> Op<(), D::Fail> {
    let Some(before) = d.status(id.0).await? else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    let (author, message) = (text(&u.author), text(&u.message));
    d.timeline(id.0, &author, "update", &message, u.status)
        .await?;
    if u.status == Some(IncidentStatus::Resolved) && before != IncidentStatus::Resolved {
        let detail = format!("{id} resolved by {author}: {message}");
        outbox::resolved(d, id.0, &detail).await?;
    }
    if let Some(rc) = &u.root_cause {
        d.set_root_cause(id.0, &text(rc)).await?;
    }
    if let Some(status) = u.status {
        d.set_status_by_hand(id.0, status).await?;
    }
    d.touch(id.0).await
}
