//! The PostgreSQL backend's outbox and escalation timers: notifications are
//! inserted inside the transaction of the event that caused them; claims
//! and timers use `FOR UPDATE SKIP LOCKED`, so each notification attempt and
//! each escalation belongs to one replica.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parsed, Fail, Op, Postgres};
use crate::incident::notices::{
    About, DeliveryState, EscalationRecord, MessageFilter, MessageRecord,
};
use crate::store::Result;

const RECORD_COLUMNS: &str = "id, incident_id, notifier, event, state, attempts, last_error, runbook, run_id, step, detail, created_at, CASE WHEN state = 'pending' THEN next_at END, delivered_at, service";

fn record(r: &Row) -> Op<MessageRecord> {
    Ok(MessageRecord {
        id: r.get(0),
        incident: About::of(r.get(1), r.get(14)),
        notifier: r.get(2),
        event: parsed(r, 3)?,
        state: parsed(r, 4)?,
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        last_error: r.get(6),
        runbook: r.get(7),
        run_id: r.get(8),
        step: r.get(9),
        detail: r.get(10),
        created_at: crate::timestamp::Timestamp(r.get(11)),
        next_at: r
            .get::<_, Option<DateTime<Utc>>>(12)
            .map(crate::timestamp::Timestamp),
        delivered_at: r
            .get::<_, Option<DateTime<Utc>>>(13)
            .map(crate::timestamp::Timestamp),
    })
}

pub(super) async fn messages_of(
    client: &impl deadpool_postgres::GenericClient,
    incident: i64,
) -> Op<Vec<MessageRecord>> {
    client
        .query(
            &format!("SELECT {RECORD_COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY id"),
            &[&incident],
        )
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn escalations_of(
    client: &impl deadpool_postgres::GenericClient,
    incident: i64,
) -> Op<Vec<EscalationRecord>> {
    client
        .query(
            "SELECT runbook, due_at, state, unless_, notify, reason FROM escalations WHERE incident_id = $1 ORDER BY due_at, id",
            &[&incident],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(EscalationRecord {
                runbook: r.get(0),
                due_at: crate::timestamp::Timestamp(r.get(1)),
                state: parsed(r, 2)?,
                unless: serde_json::from_str(r.get(3)).unwrap_or_default(),
                notify: serde_json::from_str(r.get(4)).unwrap_or_default(),
                reason: r.get(5),
            })
        })
        .collect()
}

impl Postgres {
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
