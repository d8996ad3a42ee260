//! Notifications and escalation timers: queued inside the transaction of
//! the event that causes them; each attempt and each timer belongs to one
//! replica (the driver locks what it takes).

use std::time::Duration;

use super::{Driver, Op};
use crate::incident::notices as notify;
use crate::incident::notices::{About, DeliveryState, Happened, OutboxItem, Settle, TimerState};
use crate::incident::{IncidentId, IncidentStatus};
use crate::runbook::notify::{Event, Policies, Unless};
use crate::store::types::{json, say, text};
use crate::store::StoreError;

/// The incident's notification rules and whether it is a shadow incident.
pub(in crate::store) async fn policies<D: Driver>(
    d: &D,
    incident: i64,
) -> Op<(Policies, bool), D::Fail> {
    Ok(read_policies(d.policies(incident).await?)?)
}

/// The notification rules as stored (JSON) and the shadow flag, read.
pub(in crate::store) fn read_policies(
    (raw, shadow): (String, bool),
) -> Result<(Policies, bool), StoreError> {
    let p = serde_json::from_str(&raw).map_err(|e| {
        StoreError::Invalid(format!("notification rules this runbookd cannot read: {e}"))
    })?;
    Ok((p, shadow))
}

/// Merges matched runbooks' rules into the incident's (the newest wins).
pub(in crate::store) async fn remember<D: Driver>(
    d: &D,
    incident: i64,
    add: &Policies,
) -> Op<(), D::Fail> {
    if add.is_empty() {
        return Ok(());
    }
    let (mut p, _) = policies(d, incident).await?;
    let mut changed = false;
    for (name, policy) in add {
        if p.get(name) != Some(policy) {
            p.insert(name.clone(), policy.clone());
            changed = true;
        }
    }
    if changed {
        d.set_policies(incident, &json(&p)).await?;
    }
    Ok(())
}

/// Queues the notifications `what` causes. `source`: the Alertmanager
/// notification (and alert) of the event, for the message's template
/// context; the incident's latest when `None`.
pub(in crate::store) async fn enqueue<D: Driver>(
    d: &D,
    incident: i64,
    what: &Happened<'_>,
    source: Option<(i64, &str)>,
) -> Op<usize, D::Fail> {
    let rules = policies(d, incident).await?;
    enqueue_with(d, incident, &rules, what, source).await
}

/// [`enqueue`] with the incident's rules as the caller read them.
pub(in crate::store) async fn enqueue_with<D: Driver>(
    d: &D,
    incident: i64,
    (p, shadow): &(Policies, bool),
    what: &Happened<'_>,
    source: Option<(i64, &str)>,
) -> Op<usize, D::Fail> {
    if p.is_empty() {
        return Ok(0);
    }
    insert(d, incident, &notify::queue(p, what), *shadow, source).await
}

/// Writes `queued` to the outbox (suppressed for a shadow incident).
pub(in crate::store) async fn insert<D: Driver>(
    d: &D,
    incident: i64,
    queued: &[notify::Queue],
    shadow: bool,
    source: Option<(i64, &str)>,
) -> Op<usize, D::Fail> {
    let state = if shadow {
        DeliveryState::Suppressed
    } else {
        DeliveryState::Pending
    };
    for q in queued {
        d.outbox_insert(&About::Incident(IncidentId(incident)), q, state, source)
            .await?;
    }
    Ok(queued.len())
}

/// Starts the escalation timers of `runbook` for the incident (once per rule).
pub(in crate::store) async fn arm<D: Driver>(
    d: &D,
    incident: i64,
    runbook: &str,
    p: &crate::runbook::notify::Policy,
) -> Op<(), D::Fail> {
    for (i, e) in p.escalation.iter().enumerate() {
        d.escalation_arm(incident, runbook, i, e).await?;
    }
    Ok(())
}

/// Cancels the incident's pending escalations that `condition` makes
/// unnecessary (of `runbook` only, when given).
pub(in crate::store) async fn disarm<D: Driver>(
    d: &D,
    incident: i64,
    condition: Unless,
    runbook: Option<&str>,
    why: &str,
) -> Op<u64, D::Fail> {
    d.escalations_cancel(
        incident,
        Some(condition),
        runbook,
        &notify::say::escalation_cancelled(why),
    )
    .await
}

/// The incident resolved: tell people, and cancel what resolution ends.
pub(in crate::store) async fn resolved<D: Driver>(
    d: &D,
    incident: i64,
    detail: &str,
) -> Op<(), D::Fail> {
    // Whatever its `unless`, nobody is paged about a resolved incident.
    d.escalations_cancel(
        incident,
        None,
        None,
        &notify::say::escalation_cancelled("the incident resolved"),
    )
    .await?;
    enqueue(
        d,
        incident,
        &happened(Event::IncidentResolved, detail.to_owned()),
        None,
    )
    .await?;
    Ok(())
}

/// What happened to a whole incident (no runbook, run or step).
fn happened(event: Event, detail: String) -> Happened<'static> {
    Happened {
        event,
        runbook: None,
        run_id: None,
        step: None,
        detail,
    }
}

/// Records an acknowledgement; false when the incident already had one.
/// The first acknowledgement also makes its author the incident commander
/// (unless someone was already made commander).
pub(in crate::store) async fn acknowledge<D: Driver>(
    d: &D,
    id: IncidentId,
    who: &str,
) -> Op<bool, D::Fail> {
    let who = &text(who);
    let Some((acked, commanded)) = d.acknowledgement(id.0).await? else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    if acked {
        return Ok(false);
    }
    d.acknowledge(id.0, who).await?;
    let message = notify::say::acknowledged(who);
    d.timeline(id.0, who, "update", &message, None).await?;
    if !commanded {
        d.timeline(id.0, who, "update", &say::commands(who), None)
            .await?;
    }
    disarm(d, id.0, Unless::Acknowledged, None, &message).await?;
    enqueue(
        d,
        id.0,
        &happened(Event::IncidentAcknowledged, format!("{id} {message}")),
        None,
    )
    .await?;
    Ok(true)
}

/// Fires the escalation timers that are due, each once; cancels those
/// their `unless` made unnecessary meanwhile.
pub(in crate::store) async fn escalate<D: Driver>(d: &D) -> Op<usize, D::Fail> {
    let mut fired = 0;
    for e in d.escalations_due().await? {
        let targets: Vec<String> = serde_json::from_str(&e.notify).unwrap_or_default();
        let unless: Vec<Unless> = serde_json::from_str(&e.unless).unwrap_or_default();
        let handled = unless.iter().find(|u| match u {
            Unless::Acknowledged => e.acknowledged,
            Unless::Resolved => e.status == IncidentStatus::Resolved,
            Unless::Succeeded => e.succeeded,
        });
        if let Some(u) = handled {
            d.escalation_end(
                e.id,
                TimerState::Cancelled,
                &notify::say::escalation_cancelled(u.as_str()),
            )
            .await?;
            continue;
        }
        let after = Duration::from_millis(u64::try_from(e.after_ms).unwrap_or(0));
        let text = notify::say::escalated(&e.runbook, after, &unless, &targets);
        if !d.escalation_end(e.id, TimerState::Fired, &text).await? {
            continue;
        }
        d.mark_escalated(e.incident).await?;
        d.timeline(e.incident, "runbookd", "escalation", &text, None)
            .await?;
        let queued: Vec<notify::Queue> = targets
            .iter()
            .map(|t| notify::Queue {
                notifier: t.clone(),
                event: Event::Escalated,
                runbook: Some(e.runbook.clone()),
                run_id: None,
                step: None,
                detail: text.clone(),
                template: e.message.clone(),
            })
            .collect();
        insert(d, e.incident, &queued, e.shadow, None).await?;
        enqueue(d, e.incident, &happened(Event::Escalated, text), None).await?;
        fired += 1;
    }
    Ok(fired)
}

/// Takes up to `limit` due notifications for `owner` to deliver.
pub(in crate::store) async fn claim<D: Driver>(
    d: &D,
    owner: &str,
    limit: u32,
    lease: Duration,
) -> Op<Vec<OutboxItem>, D::Fail> {
    let mut out = Vec::new();
    for (id, attempt) in d.outbox_take(owner, limit, lease).await? {
        out.push(d.outbox_item(id, attempt).await?);
    }
    Ok(out)
}

/// Records how an attempt ended, if the attempt is still the item's latest.
pub(in crate::store) async fn settle<D: Driver>(
    d: &D,
    id: i64,
    attempt: u32,
    s: &Settle,
) -> Op<bool, D::Fail> {
    d.outbox_settle(id, attempt, s).await
}

/// Queues a dead notification again, with a fresh maximum age.
pub(in crate::store) async fn retry<D: Driver>(d: &D, id: i64) -> Op<(), D::Fail> {
    match d.outbox_state(id).await? {
        None => Err(StoreError::NotFound(format!("notification {id}")).into()),
        Some(DeliveryState::Dead) => d.outbox_requeue(id).await,
        Some(other) => Err(StoreError::Conflict(format!(
            "notification {id} is {}: only a dead notification can be retried",
            other.as_str()
        ))
        .into()),
    }
}
