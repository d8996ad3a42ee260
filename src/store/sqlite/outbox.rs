//! The outbox and escalation timers on SQLite: their rows, and the
//! operations of [`crate::store::flow::outbox`] on the writer.

use rusqlite::{params, Connection};

use super::Sqlite;
use crate::incident::notices::{
    About, DeliveryState, EscalationRecord, MessageFilter, MessageRecord,
};
use crate::store::types::now;
use crate::store::Result;

pub(super) fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRecord> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(MessageRecord {
        id: r.get(0)?,
        incident: About::of(r.get(1)?, r.get(14)?),
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

pub(super) const RECORD_COLUMNS: &str = "id, incident_id, notifier, event, state, attempts, last_error, runbook, run_id, step, detail, created_at, CASE WHEN state = 'pending' THEN next_at END, delivered_at, service";

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
