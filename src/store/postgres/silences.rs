//! The silences runs made, on PostgreSQL (as the SQLite store's).

use tokio_postgres::Row;

use super::{parsed, text, Fail, Op, Postgres};
use crate::incident::IncidentId;
use crate::incident::RunSilence;
use crate::store::types::SILENCES_DUE;
use crate::store::{Pending, Result, StoreError};

const COLUMNS: &str =
    "s.id, s.run_id, s.incident_id, s.receiver, s.group_key, s.alert, s.until, s.watched, s.alertmanager";

fn row(r: &Row) -> Op<RunSilence> {
    Ok(RunSilence {
        id: r.get(0),
        run_id: r.get(1),
        incident: IncidentId(r.get(2)),
        receiver: r.get(3),
        group_key: r.get(4),
        alert: serde_json::from_str(r.get::<_, &str>(5))
            .map_err(|e| StoreError::Invalid(format!("a silence's alert: {e}")))?,
        until: parsed(r, 6)?,
        watched: r.get(7),
        alertmanager: r.get(8),
    })
}

impl Postgres {
    #[must_use]
    pub fn record_silence(&self, s: RunSilence) -> Pending<()> {
        transaction!(self, |tx| {
            tx.execute(
                "INSERT INTO silences (id, run_id, incident_id, receiver, group_key, fingerprint, starts_at, alert, until, watched, created_at, alertmanager)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11) ON CONFLICT (id) DO NOTHING",
                &[
                    &text(&s.id),
                    &s.run_id,
                    &s.incident.0,
                    &text(&s.receiver),
                    &text(&s.group_key),
                    &s.alert.fingerprint,
                    &s.alert.starts_at.to_string(),
                    &text(&serde_json::to_string(&s.alert).unwrap_or_default()),
                    &s.until.as_str(),
                    &s.watched,
                    &text(&s.alertmanager),
                ],
            )
            .await?;
            Ok::<_, Fail>(())
        })
    }

    #[must_use]
    pub fn silence_ended(&self, id: String) -> Pending<()> {
        transaction!(self, |tx| {
            tx.execute(
                "UPDATE silences SET ended_at = now() WHERE id = $1 AND ended_at IS NULL",
                &[&id],
            )
            .await?;
            Ok::<_, Fail>(())
        })
    }

    async fn silences(&self, sql: String) -> Result<Vec<RunSilence>> {
        async {
            let client = self.client().await?;
            client
                .query(&sql, &[])
                .await?
                .iter()
                .map(row)
                .collect::<Op<Vec<_>>>()
        }
        .await
        .map_err(Fail::into_store)
    }

    pub async fn silences_due(&self) -> Result<Vec<RunSilence>> {
        self.silences(format!("SELECT {COLUMNS} {SILENCES_DUE}"))
            .await
    }

    pub async fn silences_held(&self) -> Result<Vec<RunSilence>> {
        self.silences(format!(
            "SELECT {COLUMNS} FROM silences s WHERE s.ended_at IS NULL AND s.until = 'resolved'
             AND s.watched AND s.id NOT IN (SELECT s.id {SILENCES_DUE})"
        ))
        .await
    }
}
