//! Approval steps on PostgreSQL (as the SQLite store's): the first decision
//! wins by a conditional update of the pending row (a concurrent decision
//! waits for the row and then finds it decided); a deadline is timed out
//! by whoever locks its run's incident and run first and finds it still
//! pending.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parsed, Fail, Op, Postgres};
use crate::approval::Approval;
use crate::store::Result;

pub(super) const COLUMNS: &str = "id, run_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state, decided_by, decided_at, comment";

pub(super) fn row(r: &Row) -> Op<Approval> {
    Ok(Approval {
        id: r.get(0),
        run_id: r.get(1),
        runbook: r.get(2),
        step: r.get(3),
        index: u32::try_from(r.get::<_, i32>(4)).unwrap_or_default(),
        prompt: r.get(5),
        requested_at: crate::timestamp::Timestamp(r.get(6)),
        deadline: crate::timestamp::Timestamp(r.get(7)),
        on_timeout: parsed(r, 8)?,
        state: parsed(r, 9)?,
        decided_by: r.get(10),
        decided_at: r
            .get::<_, Option<DateTime<Utc>>>(11)
            .map(crate::timestamp::Timestamp),
        comment: r.get(12),
    })
}

pub(super) async fn of_incident(
    client: &impl deadpool_postgres::GenericClient,
    incident: i64,
) -> Op<Vec<Approval>> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM approvals WHERE incident_id = $1 ORDER BY id"),
            &[&incident],
        )
        .await?
        .iter()
        .map(row)
        .collect()
}

impl Postgres {
    pub async fn approvals_due(&self) -> Result<bool> {
        async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM approvals WHERE state = 'pending' AND deadline <= now())",
                    &[],
                )
                .await?;
            Ok::<_, Fail>(row.get(0))
        }
        .await
        .map_err(Fail::into_store)
    }
}
