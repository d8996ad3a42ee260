//! The SQLite backend's outbox and escalation timers: notifications are
//! inserted inside the transaction of the event that caused them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::ops::timeline;
use super::Cached;
use super::Sqlite;
use crate::incident::{IncidentId, IncidentStatus};
use crate::notify::{
    self, DeliveryState, EscalationRecord, Event, Happened, MessageFilter, MessageRecord,
    OutboxItem, Policies, Settle, Unless,
};
use crate::store::types::{json, now, ts};
use crate::store::{Pending, Result, StoreError};

/// The incident's notification rules and whether it is a shadow incident.
fn policies(conn: &Connection, incident: i64) -> Result<(Policies, bool)> {
    let (raw, shadow): (String, bool) = conn.one(
        "SELECT notify, shadow FROM incidents WHERE id = ?1",
        [incident],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let p = serde_json::from_str(&raw).map_err(|e| {
        StoreError::Invalid(format!("notification rules this runbookd cannot read: {e}"))
    })?;
    Ok((p, shadow))
}

/// Merges matched runbooks' rules into the incident's (the newest wins).
pub(super) fn remember(conn: &Connection, incident: i64, add: &Policies) -> Result<()> {
    if add.is_empty() {
        return Ok(());
    }
    let (mut p, _) = policies(conn, incident)?;
    let before = p.len();
    let mut changed = false;
    for (name, policy) in add {
        if p.get(name) != Some(policy) {
            p.insert(name.clone(), policy.clone());
            changed = true;
        }
    }
    if changed || p.len() != before {
        conn.run(
            "UPDATE incidents SET notify = ?2 WHERE id = ?1",
            params![incident, json(&p)],
        )?;
    }
    Ok(())
}

/// Queues the notifications `what` causes, in the caller's transaction.
/// `source`: the Alertmanager notification (and alert) of the event, for the
/// message's template context; the incident's latest when `None`.
pub(super) fn enqueue(
    conn: &Connection,
    incident: i64,
    what: &Happened<'_>,
    source: Option<(i64, &str)>,
) -> Result<usize> {
    let (p, shadow) = policies(conn, incident)?;
    if p.is_empty() {
        return Ok(0);
    }
    let queued = notify::queue(&p, what);
    insert(conn, incident, &queued, shadow, source)
}

fn insert(
    conn: &Connection,
    incident: i64,
    queued: &[notify::Queue],
    shadow: bool,
    source: Option<(i64, &str)>,
) -> Result<usize> {
    let state = if shadow {
        DeliveryState::Suppressed
    } else {
        DeliveryState::Pending
    };
    let at = now();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )?;
    for q in queued {
        stmt.execute(params![
            incident,
            source.map(|s| s.0),
            source.map(|s| s.1),
            q.notifier,
            q.event.as_str(),
            q.runbook,
            q.run_id,
            q.step,
            q.detail,
            q.template,
            state.as_str(),
            at
        ])?;
    }
    Ok(queued.len())
}

/// Starts the escalation timers of `runbook` for the incident (once per rule).
pub(super) fn arm(
    conn: &Connection,
    incident: i64,
    runbook: &str,
    p: &notify::Policy,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO escalations (incident_id, runbook, rule, due_at, notify, unless_, message, after_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending') ON CONFLICT DO NOTHING",
    )?;
    for (i, e) in p.escalation.iter().enumerate() {
        let due = ts(Utc::now() + chrono::Duration::from_std(e.after).unwrap_or_default());
        stmt.execute(params![
            incident,
            runbook,
            i64::try_from(i).unwrap_or(i64::MAX),
            due,
            json(&e.notify),
            json(&e.unless),
            e.message,
            i64::try_from(e.after.as_millis()).unwrap_or(i64::MAX),
        ])?;
    }
    Ok(())
}

/// Cancels the incident's pending escalations that `cond` makes unnecessary
/// (of `runbook` only, when given).
pub(super) fn disarm(
    conn: &Connection,
    incident: i64,
    condition: Unless,
    runbook: Option<&str>,
    why: &str,
) -> Result<usize> {
    let pattern = format!("%\"{}\"%", condition.as_str());
    let n = conn.run(
        "UPDATE escalations SET state = 'cancelled', ended_at = ?3, reason = ?4
         WHERE incident_id = ?1 AND state = 'pending' AND unless_ LIKE ?2 AND (?5 IS NULL OR runbook = ?5)",
        params![incident, pattern, now(), notify::say::escalation_cancelled(why), runbook],
    )?;
    Ok(n)
}

/// The incident resolved: tell people, and cancel what resolution ends.
pub(super) fn resolved(conn: &Connection, incident: i64, detail: &str) -> Result<()> {
    // Whatever its `unless`, nobody is paged about a resolved incident.
    conn.run(
        "UPDATE escalations SET state = 'cancelled', ended_at = ?2, reason = ?3 WHERE incident_id = ?1 AND state = 'pending'",
        params![incident, now(), notify::say::escalation_cancelled("the incident resolved")],
    )?;
    enqueue(
        conn,
        incident,
        &Happened {
            event: Event::IncidentResolved,
            runbook: None,
            run_id: None,
            step: None,
            detail: detail.to_owned(),
        },
        None,
    )?;
    Ok(())
}

/// Records an acknowledgement; false when the incident already had one.
/// The first acknowledgement also makes its author the incident commander
/// (unless someone was already made commander).
pub(super) fn acknowledge(conn: &Connection, id: IncidentId, who: &str) -> Result<bool> {
    let status: Option<(Option<String>, Option<String>)> = conn
        .one(
            "SELECT acknowledged_at, commander FROM incidents WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((acked, commander)) = status else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if acked.is_some() {
        return Ok(false);
    }
    conn.run(
        "UPDATE incidents SET acknowledged_at = ?2, acknowledged_by = ?3, commander = COALESCE(commander, ?3), updated_at = ?2 WHERE id = ?1",
        params![id.0, now(), who],
    )?;
    let message = notify::say::acknowledged(who);
    timeline(conn, id.0, who, "update", &message, None)?;
    if commander.is_none() {
        timeline(
            conn,
            id.0,
            who,
            "update",
            &crate::store::types::say::commands(who),
            None,
        )?;
    }
    disarm(conn, id.0, Unless::Acknowledged, None, &message)?;
    enqueue(
        conn,
        id.0,
        &Happened {
            event: Event::IncidentAcknowledged,
            runbook: None,
            run_id: None,
            step: None,
            detail: format!("{id} {message}"),
        },
        None,
    )?;
    Ok(true)
}

/// A pending timer due now: id, incident, runbook, notify, unless, message, after.
type Due = (i64, i64, String, String, String, Option<String>, i64);

/// Fires the escalation timers that are due, each once.
fn escalate(conn: &Connection) -> Result<usize> {
    let due: Vec<Due> = conn
        .prepare_cached(
            "SELECT id, incident_id, runbook, notify, unless_, message, after_ms FROM escalations
             WHERE state = 'pending' AND due_at <= ?1 ORDER BY due_at LIMIT 100",
        )?
        .query_map([now()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut fired = 0;
    for (id, incident, runbook, notify_raw, unless_raw, message, after_ms) in due {
        let targets: Vec<String> = serde_json::from_str(&notify_raw).unwrap_or_default();
        let unless: Vec<Unless> = serde_json::from_str(&unless_raw).unwrap_or_default();
        let (status, acked, shadow): (String, Option<String>, bool) = conn.one(
            "SELECT status, acknowledged_at, shadow FROM incidents WHERE id = ?1",
            [incident],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let succeeded: bool = conn.one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE incident_id = ?1 AND runbook = ?2 AND phase = 'remediation' AND state IN ('succeeded', 'succeeded_with_failures'))",
            params![incident, runbook],
            |r| r.get(0),
        )?;
        let handled = unless.iter().find(|u| match u {
            Unless::Acknowledged => acked.is_some(),
            Unless::Resolved => status == IncidentStatus::Resolved.as_str(),
            Unless::Succeeded => succeeded,
        });
        if let Some(u) = handled {
            conn.run(
                "UPDATE escalations SET state = 'cancelled', ended_at = ?2, reason = ?3 WHERE id = ?1 AND state = 'pending'",
                params![id, now(), notify::say::escalation_cancelled(&format!("{u}"))],
            )?;
            continue;
        }
        let after = Duration::from_millis(u64::try_from(after_ms).unwrap_or(0));
        let text = notify::say::escalated(&runbook, after, &unless, &targets);
        if conn.run(
            "UPDATE escalations SET state = 'fired', ended_at = ?2, reason = ?3 WHERE id = ?1 AND state = 'pending'",
            params![id, now(), text],
        )? == 0
        {
            continue;
        }
        conn.run(
            "UPDATE incidents SET escalated = 1, updated_at = ?2 WHERE id = ?1",
            params![incident, now()],
        )?;
        timeline(conn, incident, "runbookd", "escalation", &text, None)?;
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
        insert(conn, incident, &queued, shadow, None)?;
        enqueue(
            conn,
            incident,
            &Happened {
                event: Event::Escalated,
                runbook: None,
                run_id: None,
                step: None,
                detail: text.clone(),
            },
            None,
        )?;
        fired += 1;
    }
    Ok(fired)
}

fn item(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, u32)> {
    Ok((r.get(0)?, r.get(1)?))
}

/// Takes up to `limit` due notifications for `owner` to deliver.
fn claim(conn: &Connection, owner: &str, limit: u32, lease: Duration) -> Result<Vec<OutboxItem>> {
    let at = now();
    let until = ts(Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default());
    let taken: Vec<(i64, u32)> = conn
        .prepare_cached(
            "UPDATE outbox SET state = 'sending', owner = ?2, lease_until = ?3, attempts = attempts + 1
             WHERE id IN (SELECT o.id FROM outbox o WHERE ((o.state = 'pending' AND o.next_at <= ?1) OR (o.state = 'sending' AND o.lease_until < ?1))
                          AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.incident_id = o.incident_id AND p.notifier = o.notifier AND p.id < o.id AND p.state IN ('pending', 'sending'))
                          ORDER BY o.next_at LIMIT ?4)
             RETURNING id, attempts",
        )?
        .query_map(params![at, owner, until, limit], item)?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT o.notifier, o.event, o.incident_id, i.title, i.severity, i.status, i.services, o.runbook, o.run_id, o.step, o.detail, o.template, o.created_at,
                n.body, o.fingerprint
         FROM outbox o JOIN incidents i ON i.id = o.incident_id
         LEFT JOIN notifications n ON n.id = COALESCE(o.notification_id, (SELECT MAX(id) FROM notifications WHERE incident_id = o.incident_id))
         WHERE o.id = ?1",
    )?;
    let mut out = Vec::new();
    for (id, attempt) in taken {
        let it = stmt.query_row([id], |r| {
            let bad = |i: usize, e: String| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            };
            let created: String = r.get(12)?;
            Ok(OutboxItem {
                id,
                attempt,
                notifier: r.get(0)?,
                event: r.get::<_, String>(1)?.parse().map_err(|e| bad(1, e))?,
                incident: IncidentId(r.get(2)?),
                title: r.get(3)?,
                severity: r.get::<_, String>(4)?.parse().map_err(|e| bad(4, e))?,
                status: r.get::<_, String>(5)?.parse().map_err(|e| bad(5, e))?,
                services: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                runbook: r.get(7)?,
                run_id: r.get(8)?,
                step: r.get(9)?,
                detail: r.get(10)?,
                template: r.get(11)?,
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc)),
                body: r.get(13)?,
                fingerprint: r.get(14)?,
            })
        })?;
        out.push(it);
    }
    Ok(out)
}

/// Records how an attempt ended, if the attempt is still the item's latest.
fn settle(conn: &Connection, id: i64, attempt: u32, s: &Settle) -> Result<bool> {
    let n = match s {
        Settle::Delivered => conn.run(
            "UPDATE outbox SET state = 'delivered', delivered_at = ?3, owner = NULL, lease_until = NULL, last_error = NULL
             WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            params![id, attempt, now()],
        )?,
        Settle::Retry { at, error } => conn.run(
            "UPDATE outbox SET state = 'pending', next_at = ?3, last_error = ?4, owner = NULL, lease_until = NULL
             WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            params![id, attempt, ts(*at), error],
        )?,
        Settle::Defer { at } => conn.run(
            "UPDATE outbox SET state = 'pending', next_at = ?3, attempts = attempts - 1, owner = NULL, lease_until = NULL
             WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            params![id, attempt, ts(*at)],
        )?,
        Settle::Dead { error } => conn.run(
            "UPDATE outbox SET state = 'dead', last_error = ?3, owner = NULL, lease_until = NULL
             WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            params![id, attempt, error],
        )?,
    };
    Ok(n == 1)
}

/// Queues a dead notification again, with a fresh maximum age.
fn retry(conn: &Connection, id: i64) -> Result<()> {
    let state: Option<String> = conn
        .one("SELECT state FROM outbox WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    match state.as_deref() {
        None => Err(StoreError::NotFound(format!("notification {id}"))),
        Some("dead") => {
            conn.run(
                "UPDATE outbox SET state = 'pending', next_at = ?2, created_at = ?2, attempts = 0 WHERE id = ?1",
                params![id, now()],
            )?;
            Ok(())
        }
        Some(other) => Err(StoreError::Conflict(format!(
            "notification {id} is {other}: only a dead notification can be retried"
        ))),
    }
}

pub(super) fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRecord> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(MessageRecord {
        id: r.get(0)?,
        incident: IncidentId(r.get(1)?),
        notifier: r.get(2)?,
        event: r.get::<_, String>(3)?.parse().map_err(|e| bad(3, e))?,
        state: r.get::<_, String>(4)?.parse().map_err(|e| bad(4, e))?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        runbook: r.get(7)?,
        run_id: r.get(8)?,
        step: r.get(9)?,
        detail: r.get(10)?,
        created_at: r.get(11)?,
        next_at: r.get(12)?,
        delivered_at: r.get(13)?,
    })
}

pub(super) const RECORD_COLUMNS: &str = "id, incident_id, notifier, event, state, attempts, last_error, runbook, run_id, step, detail, created_at, CASE WHEN state = 'pending' THEN next_at END, delivered_at";

pub(super) fn escalations(conn: &Connection, incident: i64) -> Result<Vec<EscalationRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT runbook, due_at, state, unless_, notify, reason FROM escalations WHERE incident_id = ?1 ORDER BY due_at, id",
    )?;
    let rows = stmt
        .query_map([incident], |r| {
            Ok(EscalationRecord {
                runbook: r.get(0)?,
                due_at: r.get(1)?,
                state: r.get::<_, String>(2)?.parse().map_err(|e: String| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
                unless: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                notify: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                reason: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn messages_of(conn: &Connection, incident: i64) -> Result<Vec<MessageRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM outbox WHERE incident_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([incident], record)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

impl Sqlite {
    #[must_use]
    pub fn acknowledge(&self, id: IncidentId, who: String) -> Pending<bool> {
        Box::pin(self.write(move |c| acknowledge(c, id, &who)))
    }

    #[must_use]
    pub fn escalate(&self) -> Pending<usize> {
        Box::pin(self.write(escalate))
    }

    #[must_use]
    pub fn outbox_claim(
        &self,
        owner: String,
        limit: u32,
        lease: Duration,
    ) -> Pending<Vec<OutboxItem>> {
        Box::pin(self.write(move |c| claim(c, &owner, limit, lease)))
    }

    #[must_use]
    pub fn outbox_settle(&self, id: i64, attempt: u32, s: Settle) -> Pending<bool> {
        Box::pin(self.write(move |c| settle(c, id, attempt, &s)))
    }

    #[must_use]
    pub fn outbox_retry(&self, id: i64) -> Pending<()> {
        Box::pin(self.write(move |c| retry(c, id)))
    }

    /// Whether a notification or an escalation timer is due now.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_due(&self) -> Result<bool> {
        self.read(|c| {
            let at = now();
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending' AND next_at <= ?1)
                     OR EXISTS (SELECT 1 FROM outbox WHERE state = 'sending' AND lease_until < ?1)
                     OR EXISTS (SELECT 1 FROM escalations WHERE state = 'pending' AND due_at <= ?1)",
                [at],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Notifications, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn messages(&self, f: MessageFilter) -> Result<Vec<MessageRecord>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM outbox WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        f.incident.map(|i| i.0),
                        f.state.map(DeliveryState::as_str),
                        f.limit.unwrap_or(100).min(1000)
                    ],
                    record,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }
}
