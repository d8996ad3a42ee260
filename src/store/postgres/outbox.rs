//! The PostgreSQL backend's outbox and escalation timers: notifications are
//! inserted inside the transaction of the event that caused them; claims
//! and timers use `FOR UPDATE SKIP LOCKED`, so each notification attempt and
//! each escalation belongs to one replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parsed, secs, timeline, Fail, Op, Postgres, Tx};
use crate::incident::{IncidentId, IncidentStatus};
use crate::notify::{
    self, DeliveryState, EscalationRecord, Event, Happened, MessageFilter, MessageRecord,
    OutboxItem, Policies, Settle, Unless,
};
use crate::store::types::{json, ts};
use crate::store::{Pending, Result, StoreError};

async fn policies(tx: &Tx<'_>, incident: i64) -> Op<(Policies, bool)> {
    let row = tx
        .query_one(
            "SELECT notify, shadow FROM incidents WHERE id = $1",
            &[&incident],
        )
        .await?;
    let p = serde_json::from_str(row.get(0)).map_err(|e| {
        StoreError::Invalid(format!("notification rules this runbookd cannot read: {e}"))
    })?;
    Ok((p, row.get(1)))
}

pub(super) async fn remember(tx: &Tx<'_>, incident: i64, add: &Policies) -> Op<()> {
    if add.is_empty() {
        return Ok(());
    }
    let (mut p, _) = policies(tx, incident).await?;
    let mut changed = false;
    for (name, policy) in add {
        if p.get(name) != Some(policy) {
            p.insert(name.clone(), policy.clone());
            changed = true;
        }
    }
    if changed {
        tx.execute(
            "UPDATE incidents SET notify = $2 WHERE id = $1",
            &[&incident, &json(&p)],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn enqueue(
    tx: &Tx<'_>,
    incident: i64,
    what: &Happened<'_>,
    source: Option<(i64, &str)>,
) -> Op<usize> {
    let (p, shadow) = policies(tx, incident).await?;
    if p.is_empty() {
        return Ok(0);
    }
    let queued = notify::queue(&p, what);
    insert(tx, incident, &queued, shadow, source).await
}

async fn insert(
    tx: &Tx<'_>,
    incident: i64,
    queued: &[notify::Queue],
    shadow: bool,
    source: Option<(i64, &str)>,
) -> Op<usize> {
    let state = if shadow {
        DeliveryState::Suppressed
    } else {
        DeliveryState::Pending
    };
    for q in queued {
        tx.execute(
            "INSERT INTO outbox (incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, created_at, next_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), now())",
            &[
                &incident,
                &source.map(|s| s.0),
                &source.map(|s| s.1),
                &q.notifier,
                &q.event.as_str(),
                &q.runbook,
                &q.run_id,
                &q.step,
                &super::text(&q.detail),
                &q.template,
                &state.as_str(),
            ],
        )
        .await?;
    }
    Ok(queued.len())
}

pub(super) async fn arm(tx: &Tx<'_>, incident: i64, runbook: &str, p: &notify::Policy) -> Op<()> {
    for (i, e) in p.escalation.iter().enumerate() {
        tx.execute(
            "INSERT INTO escalations (incident_id, runbook, rule, due_at, notify, unless_, message, after_ms, state)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6, $7, $8, 'pending') ON CONFLICT DO NOTHING",
            &[
                &incident,
                &runbook,
                &i32::try_from(i).unwrap_or(i32::MAX),
                &secs(e.after),
                &json(&e.notify),
                &json(&e.unless),
                &e.message,
                &i64::try_from(e.after.as_millis()).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn disarm(
    tx: &Tx<'_>,
    incident: i64,
    condition: Unless,
    runbook: Option<&str>,
    why: &str,
) -> Op<u64> {
    let pattern = format!("%\"{}\"%", condition.as_str());
    tx.execute(
        "UPDATE escalations SET state = 'cancelled', ended_at = now(), reason = $3
         WHERE incident_id = $1 AND state = 'pending' AND unless_ LIKE $2 AND ($4::TEXT IS NULL OR runbook = $4)",
        &[&incident, &pattern, &notify::say::escalation_cancelled(why), &runbook],
    )
    .await
}

pub(super) async fn resolved(tx: &Tx<'_>, incident: i64, detail: &str) -> Op<()> {
    // Whatever its `unless`, nobody is paged about a resolved incident.
    tx.execute(
        "UPDATE escalations SET state = 'cancelled', ended_at = now(), reason = $2 WHERE incident_id = $1 AND state = 'pending'",
        &[&incident, &notify::say::escalation_cancelled("the incident resolved")],
    )
    .await?;
    enqueue(
        tx,
        incident,
        &Happened {
            event: Event::IncidentResolved,
            runbook: None,
            run_id: None,
            step: None,
            detail: detail.to_owned(),
        },
        None,
    )
    .await?;
    Ok(())
}

/// The first acknowledgement also makes its author the incident commander
/// (unless someone was already made commander).
pub(super) async fn acknowledge(tx: &Tx<'_>, id: IncidentId, who: &str) -> Op<bool> {
    let Some(row) = tx
        .query_opt(
            "SELECT acknowledged_at IS NOT NULL, commander IS NOT NULL FROM incidents WHERE id = $1 FOR UPDATE",
            &[&id.0],
        )
        .await?
    else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    if row.get::<_, bool>(0) {
        return Ok(false);
    }
    let who = super::text(who);
    let who = who.as_str();
    tx.execute(
        "UPDATE incidents SET acknowledged_at = now(), acknowledged_by = $2, commander = COALESCE(commander, $2), updated_at = now() WHERE id = $1",
        &[&id.0, &who],
    )
    .await?;
    let message = notify::say::acknowledged(who);
    timeline(tx, id.0, who, "update", &message, None).await?;
    if !row.get::<_, bool>(1) {
        timeline(
            tx,
            id.0,
            who,
            "update",
            &crate::store::types::say::commands(who),
            None,
        )
        .await?;
    }
    disarm(tx, id.0, Unless::Acknowledged, None, &message).await?;
    enqueue(
        tx,
        id.0,
        &Happened {
            event: Event::IncidentAcknowledged,
            runbook: None,
            run_id: None,
            step: None,
            detail: format!("{id} {message}"),
        },
        None,
    )
    .await?;
    Ok(true)
}

async fn escalate(tx: &Tx<'_>) -> Op<usize> {
    let due = tx
        .query(
            "SELECT e.id, e.incident_id, e.runbook, e.notify, e.unless_, e.message, e.after_ms,
                    i.status, i.acknowledged_at IS NOT NULL, i.shadow,
                    EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = e.incident_id AND r.runbook = e.runbook AND r.phase = 'remediation' AND r.state IN ('succeeded', 'succeeded_with_failures'))
             FROM escalations e JOIN incidents i ON i.id = e.incident_id
             WHERE e.state = 'pending' AND e.due_at <= now() ORDER BY e.due_at LIMIT 100 FOR UPDATE OF e, i SKIP LOCKED",
            &[],
        )
        .await?;
    let mut fired = 0;
    for r in due {
        let id: i64 = r.get(0);
        let incident: i64 = r.get(1);
        let runbook: String = r.get(2);
        let targets: Vec<String> = serde_json::from_str(r.get(3)).unwrap_or_default();
        let unless: Vec<Unless> = serde_json::from_str(r.get(4)).unwrap_or_default();
        let message: Option<String> = r.get(5);
        let after = Duration::from_millis(u64::try_from(r.get::<_, i64>(6)).unwrap_or(0));
        let status: &str = r.get(7);
        let (acked, shadow, succeeded): (bool, bool, bool) = (r.get(8), r.get(9), r.get(10));
        let handled = unless.iter().find(|u| match u {
            Unless::Acknowledged => acked,
            Unless::Resolved => status == IncidentStatus::Resolved.as_str(),
            Unless::Succeeded => succeeded,
        });
        if let Some(u) = handled {
            tx.execute(
                "UPDATE escalations SET state = 'cancelled', ended_at = now(), reason = $2 WHERE id = $1 AND state = 'pending'",
                &[&id, &notify::say::escalation_cancelled(u.as_str())],
            )
            .await?;
            continue;
        }
        let text = notify::say::escalated(&runbook, after, &unless, &targets);
        if tx
            .execute(
                "UPDATE escalations SET state = 'fired', ended_at = now(), reason = $2 WHERE id = $1 AND state = 'pending'",
                &[&id, &text],
            )
            .await?
            == 0
        {
            continue;
        }
        tx.execute(
            "UPDATE incidents SET escalated = TRUE, updated_at = now() WHERE id = $1",
            &[&incident],
        )
        .await?;
        timeline(tx, incident, "runbookd", "escalation", &text, None).await?;
        let queued: Vec<notify::Queue> = targets
            .iter()
            .map(|t| notify::Queue {
                notifier: t.clone(),
                event: Event::Escalated,
                runbook: Some(runbook.clone()),
                run_id: None,
                step: None,
                detail: text.clone(),
                template: message.clone(),
            })
            .collect();
        insert(tx, incident, &queued, shadow, None).await?;
        enqueue(
            tx,
            incident,
            &Happened {
                event: Event::Escalated,
                runbook: None,
                run_id: None,
                step: None,
                detail: text.clone(),
            },
            None,
        )
        .await?;
        fired += 1;
    }
    Ok(fired)
}

async fn claim(tx: &Tx<'_>, owner: &str, limit: u32, lease: Duration) -> Op<Vec<OutboxItem>> {
    let taken = tx
        .query(
            "UPDATE outbox SET state = 'sending', owner = $1, lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
             WHERE id IN (SELECT o.id FROM outbox o WHERE ((o.state = 'pending' AND o.next_at <= now()) OR (o.state = 'sending' AND o.lease_until < now()))
                          AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.incident_id = o.incident_id AND p.notifier = o.notifier AND p.id < o.id AND p.state IN ('pending', 'sending'))
                          ORDER BY o.next_at LIMIT $3 FOR UPDATE OF o SKIP LOCKED)
             RETURNING id, attempts",
            &[&owner, &secs(lease), &i64::from(limit)],
        )
        .await?;
    let mut out = Vec::new();
    for t in taken {
        let id: i64 = t.get(0);
        let r = tx
            .query_one(
                "SELECT o.notifier, o.event, o.incident_id, i.title, i.severity, i.status, i.services, o.runbook, o.run_id, o.step, o.detail, o.template, o.created_at,
                        n.body, o.fingerprint
                 FROM outbox o JOIN incidents i ON i.id = o.incident_id
                 LEFT JOIN notifications n ON n.id = COALESCE(o.notification_id, (SELECT MAX(id) FROM notifications WHERE incident_id = o.incident_id))
                 WHERE o.id = $1",
                &[&id],
            )
            .await?;
        out.push(OutboxItem {
            id,
            attempt: u32::try_from(t.get::<_, i32>(1)).unwrap_or(0),
            notifier: r.get(0),
            event: parsed(&r, 1)?,
            incident: IncidentId(r.get(2)),
            title: r.get(3),
            severity: parsed(&r, 4)?,
            status: parsed(&r, 5)?,
            services: serde_json::from_str(r.get(6)).unwrap_or_default(),
            runbook: r.get(7),
            run_id: r.get(8),
            step: r.get(9),
            detail: r.get(10),
            template: r.get(11),
            created_at: r.get::<_, DateTime<Utc>>(12),
            body: r.get(13),
            fingerprint: r.get(14),
        });
    }
    Ok(out)
}

async fn settle(tx: &Tx<'_>, id: i64, attempt: u32, s: &Settle) -> Op<bool> {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let n = match s {
        Settle::Delivered => {
            tx.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = now(), owner = NULL, lease_until = NULL, last_error = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                &[&id, &attempt],
            )
            .await?
        }
        Settle::Retry { at, error } => {
            tx.execute(
                "UPDATE outbox SET state = 'pending', next_at = $3, last_error = $4, owner = NULL, lease_until = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                &[&id, &attempt, at, error],
            )
            .await?
        }
        Settle::Defer { at } => {
            tx.execute(
                "UPDATE outbox SET state = 'pending', next_at = $3, attempts = attempts - 1, owner = NULL, lease_until = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                &[&id, &attempt, at],
            )
            .await?
        }
        Settle::Dead { error } => {
            tx.execute(
                "UPDATE outbox SET state = 'dead', last_error = $3, owner = NULL, lease_until = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                &[&id, &attempt, error],
            )
            .await?
        }
    };
    Ok(n == 1)
}

async fn retry(tx: &Tx<'_>, id: i64) -> Op<()> {
    let state: Option<String> = tx
        .query_opt("SELECT state FROM outbox WHERE id = $1 FOR UPDATE", &[&id])
        .await?
        .map(|r| r.get(0));
    match state.as_deref() {
        None => Err(StoreError::NotFound(format!("notification {id}")).into()),
        Some("dead") => {
            tx.execute(
                "UPDATE outbox SET state = 'pending', next_at = now(), created_at = now(), attempts = 0 WHERE id = $1",
                &[&id],
            )
            .await?;
            Ok(())
        }
        Some(other) => Err(StoreError::Conflict(format!(
            "notification {id} is {other}: only a dead notification can be retried"
        ))
        .into()),
    }
}

const RECORD_COLUMNS: &str = "id, incident_id, notifier, event, state, attempts, last_error, runbook, run_id, step, detail, created_at, CASE WHEN state = 'pending' THEN next_at END, delivered_at";

fn record(r: &Row) -> Op<MessageRecord> {
    Ok(MessageRecord {
        id: r.get(0),
        incident: IncidentId(r.get(1)),
        notifier: r.get(2),
        event: parsed(r, 3)?,
        state: parsed(r, 4)?,
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        last_error: r.get(6),
        runbook: r.get(7),
        run_id: r.get(8),
        step: r.get(9),
        detail: r.get(10),
        created_at: ts(r.get(11)),
        next_at: r.get::<_, Option<DateTime<Utc>>>(12).map(ts),
        delivered_at: r.get::<_, Option<DateTime<Utc>>>(13).map(ts),
    })
}

pub(super) async fn of_incident(
    client: &impl deadpool_postgres::GenericClient,
    incident: i64,
) -> Op<(Vec<MessageRecord>, Vec<EscalationRecord>)> {
    let messages = client
        .query(
            &format!("SELECT {RECORD_COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY id"),
            &[&incident],
        )
        .await?
        .iter()
        .map(record)
        .collect::<Op<Vec<_>>>()?;
    let escalations = client
        .query(
            "SELECT runbook, due_at, state, unless_, notify, reason FROM escalations WHERE incident_id = $1 ORDER BY due_at, id",
            &[&incident],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(EscalationRecord {
                runbook: r.get(0),
                due_at: ts(r.get(1)),
                state: parsed(r, 2)?,
                unless: serde_json::from_str(r.get(3)).unwrap_or_default(),
                notify: serde_json::from_str(r.get(4)).unwrap_or_default(),
                reason: r.get(5),
            })
        })
        .collect::<Op<Vec<_>>>()?;
    Ok((messages, escalations))
}

impl Postgres {
    #[must_use]
    pub fn acknowledge(&self, id: IncidentId, who: String) -> Pending<bool> {
        transaction!(self, |tx| acknowledge(&tx, id, &who).await)
    }

    #[must_use]
    pub fn escalate(&self) -> Pending<usize> {
        transaction!(self, |tx| escalate(&tx).await)
    }

    #[must_use]
    pub fn outbox_claim(
        &self,
        owner: String,
        limit: u32,
        lease: Duration,
    ) -> Pending<Vec<OutboxItem>> {
        transaction!(self, |tx| claim(&tx, &owner, limit, lease).await)
    }

    #[must_use]
    pub fn outbox_settle(&self, id: i64, attempt: u32, s: Settle) -> Pending<bool> {
        transaction!(self, |tx| settle(&tx, id, attempt, &s).await)
    }

    #[must_use]
    pub fn outbox_retry(&self, id: i64) -> Pending<()> {
        transaction!(self, |tx| retry(&tx, id).await)
    }

    pub async fn outbox_due(&self) -> Result<bool> {
        async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= now())
                         OR EXISTS (SELECT 1 FROM outbox WHERE state = 'sending' AND lease_until < now())
                         OR EXISTS (SELECT 1 FROM escalations WHERE state = 'pending' AND due_at <= now())",
                    &[],
                )
                .await?;
            Ok::<_, Fail>(row.get(0))
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn messages(&self, f: MessageFilter) -> Result<Vec<MessageRecord>> {
        async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {RECORD_COLUMNS} FROM outbox WHERE ($1::BIGINT IS NULL OR incident_id = $1) AND ($2::TEXT IS NULL OR state = $2) ORDER BY id DESC LIMIT $3"),
                    &[
                        &f.incident.map(|i| i.0),
                        &f.state.map(DeliveryState::as_str),
                        &i64::from(f.limit.unwrap_or(100).min(1000)),
                    ],
                )
                .await?;
            rows.iter().map(record).collect::<Op<Vec<_>>>()
        }
        .await
        .map_err(Fail::into_store)
    }
}
