//! The silences runs made, on SQLite (see `schema_v10.sql`).

use rusqlite::{params, Connection};

use super::{Cached, Sqlite};
use crate::incident::IncidentId;
use crate::incident::RunSilence;
use crate::store::types::{now, SILENCES_DUE};
use crate::store::{Pending, Result};

const COLUMNS: &str =
    "s.id, s.run_id, s.incident_id, s.receiver, s.group_key, s.alert, s.until, s.watched, s.alertmanager";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSilence> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(RunSilence {
        id: r.get(0)?,
        run_id: r.get(1)?,
        incident: IncidentId(r.get(2)?),
        receiver: r.get(3)?,
        group_key: r.get(4)?,
        alert: serde_json::from_str(&r.get::<_, String>(5)?).map_err(|e| bad(5, e.to_string()))?,
        until: r.get::<_, String>(6)?.parse().map_err(|e| bad(6, e))?,
        watched: r.get(7)?,
        alertmanager: r.get(8)?,
    })
}

fn list(conn: &Connection, sql: &str) -> Result<Vec<RunSilence>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map([], row)?
        .collect::<rusqlite::Result<_>>()?)
}

impl Sqlite {
    /// Records a silence a run made (again: nothing).
    #[must_use]
    pub fn record_silence(&self, s: RunSilence) -> Pending<()> {
        Box::pin(self.write(move |c| {
            c.run(
                "INSERT INTO silences (id, run_id, incident_id, receiver, group_key, fingerprint, starts_at, alert, until, watched, created_at, alertmanager)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING",
                params![
                    s.id,
                    s.run_id,
                    s.incident.0,
                    s.receiver,
                    s.group_key,
                    s.alert.fingerprint,
                    s.alert.starts_at.to_string(),
                    serde_json::to_string(&s.alert).unwrap_or_default(),
                    s.until.as_str(),
                    s.watched,
                    now(),
                    s.alertmanager
                ],
            )?;
            Ok(())
        }))
    }

    /// Marks a silence ended (expired in Alertmanager).
    #[must_use]
    pub fn silence_ended(&self, id: String) -> Pending<()> {
        Box::pin(self.write(move |c| {
            c.run(
                "UPDATE silences SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
                params![id, now()],
            )?;
            Ok(())
        }))
    }

    pub async fn silences_due(&self) -> Result<Vec<RunSilence>> {
        self.read(|c| list(c, &format!("SELECT {COLUMNS} {SILENCES_DUE}")))
            .await
    }

    /// `until: resolved` silences still in force, whose alerts Alertmanager
    /// is to be asked about.
    pub async fn silences_held(&self) -> Result<Vec<RunSilence>> {
        self.read(|c| {
            list(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM silences s WHERE s.ended_at IS NULL AND s.until = 'resolved'
                     AND s.watched AND s.id NOT IN (SELECT s.id {SILENCES_DUE})"
                ),
            )
        })
        .await
    }
}
