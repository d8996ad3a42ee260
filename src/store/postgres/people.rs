//! People working an incident, on PostgreSQL (as the SQLite store's): its
//! commander, the checklist items they tick, the runs they re-run.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use std::time::Duration;

use super::{advance, text, timeline, Fail, Op, Postgres, Tx};
use crate::incident::{ChecklistItem, IncidentId, IncidentStatus, RunState};
use crate::lifecycle;
use crate::store::types::{
    checklist, pick, run_detail, say, ts, ChecklistRun, HandOver, Rerun, Tally, Tick, Ticks,
    CURRENT_REMEDIATION_STATES,
};
use crate::store::{Pending, StoreError};

pub(super) const TICKS: &str = "SELECT d.run_id, d.step, d.done_by, d.done_at FROM checklist_done d JOIN runs r ON r.id = d.run_id WHERE r.incident_id = $1";

/// Who ticked which checklist items, from the rows of [`TICKS`].
pub(super) fn ticks_of(rows: &[Row]) -> Ticks {
    rows.iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                (r.get(2), ts(r.get::<_, DateTime<Utc>>(3))),
            )
        })
        .collect()
}

/// The lifecycle's count of `incident`'s current remediation runs.
pub(super) async fn tally(tx: &Tx<'_>, incident: i64) -> Op<Tally> {
    let rows = tx.query(CURRENT_REMEDIATION_STATES, &[&incident]).await?;
    let states = rows
        .iter()
        .map(|r| {
            r.get::<_, &str>(0)
                .parse::<RunState>()
                .map_err(|e| StoreError::Invalid(e).into())
        })
        .collect::<Op<Vec<_>>>()?;
    Ok(Tally::of(states))
}

async fn items(tx: &Tx<'_>, incident: i64, ticks: &Ticks) -> Op<Vec<ChecklistItem>> {
    let rows = tx
        .query(
            "SELECT id, runbook, COALESCE(rerun_of, id), result FROM runs WHERE incident_id = $1 ORDER BY id",
            &[&incident],
        )
        .await?;
    let details = rows
        .iter()
        .map(|r| run_detail(r.get(3)).map_err(|e| StoreError::Invalid(e).into()))
        .collect::<Op<Vec<_>>>()?;
    let runs: Vec<ChecklistRun<'_>> = rows
        .iter()
        .zip(&details)
        .map(|(r, d)| ChecklistRun {
            id: r.get(0),
            runbook: r.get(1),
            lineage: r.get(2),
            result: d.as_ref(),
        })
        .collect();
    Ok(checklist(&runs, ticks))
}

async fn tick(tx: &Tx<'_>, id: IncidentId, t: &Tick) -> Op<ChecklistItem> {
    if tx
        .query_opt("SELECT 1 FROM incidents WHERE id = $1 FOR UPDATE", &[&id.0])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound(id.to_string()).into());
    }
    let who = text(&t.who);
    let mut ticks = ticks_of(&tx.query(TICKS, &[&id.0]).await?);
    let before = items(tx, id.0, &ticks).await?;
    let item = pick(&before, t, id)?.clone();
    if item.is_open() != t.done {
        return Ok(item);
    }
    let key = (item.run_id, item.step.clone());
    if t.done {
        let at: DateTime<Utc> = tx
            .query_one(
                "INSERT INTO checklist_done (run_id, step, done_by, done_at) VALUES ($1, $2, $3, now()) RETURNING done_at",
                &[&item.run_id, &item.step, &who],
            )
            .await?
            .get(0);
        ticks.insert(key.clone(), (who.clone(), ts(at)));
    } else {
        tx.execute(
            "DELETE FROM checklist_done WHERE run_id = $1 AND step = $2",
            &[&item.run_id, &item.step],
        )
        .await?;
        ticks.remove(&key);
    }
    let message = say::ticked(&who, item.run_id, &item.step, &item.text, t.done);
    timeline(tx, id.0, &who, "update", &message, None).await?;
    tx.execute(
        "UPDATE incidents SET updated_at = now() WHERE id = $1",
        &[&id.0],
    )
    .await?;
    let after = items(tx, id.0, &ticks).await?;
    let not_succeeded = tally(tx, id.0).await?.not_succeeded;
    advance(
        tx,
        id.0,
        lifecycle::Event::ChecklistChanged {
            open: after.iter().filter(|i| i.is_open()).count(),
            remediation_not_succeeded: not_succeeded,
        },
    )
    .await?;
    Ok(after
        .into_iter()
        .find(|i| (i.run_id, &i.step) == (key.0, &key.1))
        .unwrap_or(item))
}

async fn hand_over(tx: &Tx<'_>, id: IncidentId, to: &str, by: &str) -> Op<HandOver> {
    let (to, by) = (text(to), text(by));
    let Some(row) = tx
        .query_opt(
            "SELECT commander, acknowledged_at IS NOT NULL FROM incidents WHERE id = $1 FOR UPDATE",
            &[&id.0],
        )
        .await?
    else {
        return Err(StoreError::NotFound(id.to_string()).into());
    };
    let mut previous: Option<String> = row.get(0);
    if !row.get::<_, bool>(1) {
        // Handing command over is taking the incident on.
        super::outbox::acknowledge(tx, id, &by).await?;
        previous = tx
            .query_one("SELECT commander FROM incidents WHERE id = $1", &[&id.0])
            .await?
            .get(0);
    }
    if previous.as_deref() == Some(to.as_str()) {
        return Ok(HandOver {
            commander: to,
            previous: None,
            changed: false,
        });
    }
    tx.execute(
        "UPDATE incidents SET commander = $2, updated_at = now() WHERE id = $1",
        &[&id.0, &to],
    )
    .await?;
    let message = say::handed_over(&by, previous.as_deref(), &to);
    timeline(tx, id.0, &by, "update", &message, None).await?;
    Ok(HandOver {
        commander: to,
        previous,
        changed: true,
    })
}

async fn rerun(tx: &Tx<'_>, run: i64, who: &str) -> Op<Rerun> {
    let who = text(who);
    let Some(r) = tx
        .query_opt(
            "SELECT r.incident_id, r.notification_id, r.runbook, r.fingerprint, r.starts_at, r.phase, r.state,
                    COALESCE(r.rerun_of, r.id), r.idempotent, i.status
             FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = $1 FOR UPDATE OF i",
            &[&run],
        )
        .await?
    else {
        return Err(StoreError::NotFound(format!("run {run}")).into());
    };
    let (incident, notification): (i64, i64) = (r.get(0), r.get(1));
    let (runbook, fingerprint, starts, phase): (String, String, String, String) =
        (r.get(2), r.get(3), r.get(4), r.get(5));
    let state: RunState = r.get::<_, &str>(6).parse().map_err(StoreError::Invalid)?;
    let lineage: i64 = r.get(7);
    let idempotent: bool = r.get(8);
    let status: IncidentStatus = r.get::<_, &str>(9).parse().map_err(StoreError::Invalid)?;
    let busy: Option<i64> = tx
        .query_opt(
            "SELECT id FROM runs WHERE runbook = $1 AND fingerprint = $2 AND phase = $3 AND state IN ('queued', 'running', 'awaiting_approval')",
            &[&runbook, &fingerprint, &phase],
        )
        .await?
        .map(|r| r.get(0));
    crate::store::types::may_rerun(run, state, IncidentId(incident), status, &runbook, busy)?;
    // The run key and the one-in-progress index make a concurrent second
    // re-run of the same run fail here rather than queue twice.
    let id: i64 = tx
        .query_one(
            "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent, rerun_of, rerun)
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', now(), $7, $8,
                     (SELECT COALESCE(MAX(rerun), 0) + 1 FROM runs WHERE runbook = $3 AND fingerprint = $4 AND starts_at = $5 AND phase = $6))
             RETURNING id",
            &[&incident, &notification, &runbook, &fingerprint, &starts, &phase, &idempotent, &lineage],
        )
        .await?
        .get(0);
    timeline(
        tx,
        incident,
        &who,
        "run",
        &say::rerun(&who, run, &runbook, id),
        None,
    )
    .await?;
    tx.execute("SELECT pg_notify($1, '')", &[&super::QUEUED_CHANNEL])
        .await?;
    tx.execute(
        "UPDATE incidents SET updated_at = now() WHERE id = $1",
        &[&incident],
    )
    .await?;
    Ok(Rerun {
        incident: IncidentId(incident),
        run: id,
        rerun_of: lineage,
    })
}

impl Postgres {
    #[must_use]
    pub fn tick(&self, id: IncidentId, t: Tick) -> Pending<ChecklistItem> {
        transaction!(self, |tx| tick(&tx, id, &t).await)
    }

    #[must_use]
    pub fn hand_over(&self, id: IncidentId, to: String, by: String) -> Pending<HandOver> {
        transaction!(self, |tx| hand_over(&tx, id, &to, &by).await)
    }

    #[must_use]
    pub fn rerun(&self, run: i64, who: String) -> Pending<Rerun> {
        transaction!(self, |tx| rerun(&tx, run, &who).await)
    }
}
