//! Approval steps on PostgreSQL (as the SQLite store's): the first decision
//! wins by a conditional update of the pending row (a concurrent decision
//! waits for the row and then finds it decided); deadlines are taken
//! `FOR UPDATE SKIP LOCKED`, so each fires on one replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{parsed, run_note, secs, text, timeline, Fail, Op, Postgres, Tx, QUEUED_CHANNEL};
use crate::approval::{say, Approval, ApprovalState, Decision, Request, Resume};
use crate::incident::RunDetail;
use crate::store::types::{run_detail, ts};
use crate::store::{Pending, Result, StoreError};

const COLUMNS: &str = "id, run_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state, decided_by, decided_at, comment";

fn row(r: &Row) -> Op<Approval> {
    Ok(Approval {
        id: r.get(0),
        run_id: r.get(1),
        runbook: r.get(2),
        step: r.get(3),
        index: u32::try_from(r.get::<_, i32>(4)).unwrap_or_default(),
        prompt: r.get(5),
        requested_at: ts(r.get(6)),
        deadline: ts(r.get(7)),
        on_timeout: parsed(r, 8)?,
        state: parsed(r, 9)?,
        decided_by: r.get(10),
        decided_at: r.get::<_, Option<DateTime<Utc>>>(11).map(ts),
        comment: r.get(12),
    })
}

pub(super) async fn pause(
    tx: &Tx<'_>,
    incident: i64,
    run: i64,
    runbook: &str,
    r: &Request,
    origin: (i64, &str),
) -> Op<()> {
    let index = i32::try_from(r.index).unwrap_or(i32::MAX);
    let row = tx
        .query_one(
            "INSERT INTO approvals (run_id, incident_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state)
             VALUES ($1, $2, $3, $4, $5, $6, now(), now() + make_interval(secs => $7), $8, 'pending') RETURNING deadline",
            &[&run, &incident, &runbook, &r.step, &index, &text(&r.plan.prompt), &secs(r.plan.timeout()), &r.plan.on_timeout.as_str()],
        )
        .await?;
    let message = say::requested(run, runbook, r, &ts(row.get(0)));
    run_note(tx, incident, &message).await?;
    super::outbox::enqueue(
        tx,
        incident,
        &crate::notify::Happened {
            event: crate::notify::Event::ApprovalRequested,
            runbook: Some(runbook),
            run_id: Some(run),
            step: Some(&r.step),
            detail: message,
        },
        Some(origin),
    )
    .await?;
    Ok(())
}

async fn decided(tx: &Tx<'_>, a: &Approval, author: &str) -> Op<()> {
    let Some(r) = tx
        .query_opt(
            "UPDATE runs SET state = 'queued' WHERE id = $1 AND state = 'awaiting_approval' RETURNING incident_id",
            &[&a.run_id],
        )
        .await?
    else {
        tracing::warn!(run = a.run_id, "an approval was decided for a run that no longer waits");
        return Ok(());
    };
    let incident: i64 = r.get(0);
    timeline(tx, incident, author, "approval", &say::decided(a), None).await?;
    tx.execute(
        "UPDATE incidents SET updated_at = now() WHERE id = $1",
        &[&incident],
    )
    .await?;
    // Every replica's claim loop hears of the queued run.
    tx.execute("SELECT pg_notify($1, '')", &[&QUEUED_CHANNEL])
        .await?;
    Ok(())
}

async fn decide(
    tx: &Tx<'_>,
    run: i64,
    approval: i64,
    decision: Decision,
    who: &str,
    comment: Option<&str>,
) -> Op<Result<Approval>> {
    let comment = comment.map(text);
    // The run first, then its approval: the order cancel takes them in.
    tx.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&run])
        .await?;
    let taken = tx
        .query_opt(
            &format!(
                "UPDATE approvals SET state = $2, decided_by = $3, decided_at = now(), comment = $4
                 WHERE id = $5 AND run_id = $1 AND id = (SELECT MAX(id) FROM approvals WHERE run_id = $1)
                   AND state = 'pending' AND deadline > now()
                 RETURNING {COLUMNS}"
            ),
            &[&run, &decision.state().as_str(), &text(who), &comment, &approval],
        )
        .await?;
    if let Some(r) = taken {
        let a = row(&r)?;
        decided(tx, &a, who).await?;
        return Ok(Ok(a));
    }
    // Refused: answered from a committed transaction, so that the run's
    // lock is released now rather than by a rollback sent on drop (a claim
    // right after would skip the still-locked run).
    let Some(state) = tx
        .query_opt("SELECT state FROM runs WHERE id = $1", &[&run])
        .await?
    else {
        return Ok(Err(StoreError::NotFound(format!("run {run}"))));
    };
    let last = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM approvals WHERE run_id = $1 ORDER BY id DESC LIMIT 1"),
            &[&run],
        )
        .await?
        .as_ref()
        .map(row)
        .transpose()?;
    Ok(Err(StoreError::Conflict(crate::approval::conflict(
        run,
        approval,
        state.get(0),
        last.as_ref(),
    ))))
}

async fn expire(tx: &Tx<'_>) -> Op<usize> {
    let due = tx
        .query(
            &format!(
                "UPDATE approvals SET state = 'timed_out', decided_by = 'runbookd', decided_at = now()
                 WHERE id IN (SELECT a.id FROM approvals a JOIN runs r ON r.id = a.run_id
                              WHERE a.state = 'pending' AND a.deadline <= now() FOR UPDATE OF r, a SKIP LOCKED)
                   AND state = 'pending'
                 RETURNING {COLUMNS}"
            ),
            &[],
        )
        .await?;
    for r in &due {
        decided(tx, &row(r)?, "runbookd").await?;
    }
    Ok(due.len())
}

pub(super) async fn withdraw(tx: &Tx<'_>, run: i64) -> Op<()> {
    tx.execute(
        "UPDATE approvals SET state = 'cancelled', decided_at = now() WHERE run_id = $1 AND state = 'pending'",
        &[&run],
    )
    .await?;
    Ok(())
}

pub(super) async fn resume(tx: &Tx<'_>, run: i64) -> Op<Option<Resume>> {
    let r = tx
        .query_one("SELECT result FROM runs WHERE id = $1", &[&run])
        .await?;
    let Some(RunDetail::Executed(prior)) =
        run_detail(r.get::<_, Option<&str>>(0)).map_err(StoreError::Invalid)?
    else {
        return Ok(None);
    };
    let approval = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM approvals WHERE run_id = $1 ORDER BY id DESC LIMIT 1"),
            &[&run],
        )
        .await?
        .as_ref()
        .map(row)
        .transpose()?;
    Ok(approval
        .filter(|a| a.state != ApprovalState::Pending && a.state != ApprovalState::Cancelled)
        .map(|approval| Resume { prior, approval }))
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
    #[must_use]
    pub fn decide(
        &self,
        run: i64,
        approval: i64,
        decision: Decision,
        who: String,
        comment: Option<String>,
    ) -> Pending<Approval> {
        let decided: Pending<Result<Approval>> = transaction!(self, |tx| decide(
            &tx,
            run,
            approval,
            decision,
            &who,
            comment.as_deref()
        )
        .await);
        Box::pin(async move { decided.await.and_then(|r| r) })
    }

    #[must_use]
    pub fn expire_approvals(&self) -> Pending<usize> {
        transaction!(self, |tx| expire(&tx).await)
    }

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
