//! Approval steps on SQLite: pausing a run, deciding, deadlines, resuming.

use rusqlite::{params, Connection, OptionalExtension};

use super::ops::{run_note, timeline};
use super::Cached;
use super::Sqlite;
use crate::approval::{say, Approval, ApprovalState, Decision, Request, Resume};
use crate::incident::RunDetail;
use crate::store::types::{now, run_detail, ts};
use crate::store::{Pending, Result, StoreError};

const COLUMNS: &str = "id, run_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state, decided_by, decided_at, comment";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    fn parse<T: std::str::FromStr<Err = String>>(i: usize, s: &str) -> rusqlite::Result<T> {
        s.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    }
    Ok(Approval {
        id: r.get(0)?,
        run_id: r.get(1)?,
        runbook: r.get(2)?,
        step: r.get(3)?,
        index: r.get(4)?,
        prompt: r.get(5)?,
        requested_at: r.get(6)?,
        deadline: r.get(7)?,
        on_timeout: parse(8, &r.get::<_, String>(8)?)?,
        state: parse(9, &r.get::<_, String>(9)?)?,
        decided_by: r.get(10)?,
        decided_at: r.get(11)?,
        comment: r.get(12)?,
    })
}

/// Records a run's pause on an approval step (its fence checked by the
/// caller): the approval row, the timeline and `approval_requested`.
pub(super) fn pause(
    conn: &Connection,
    incident: i64,
    run: i64,
    runbook: &str,
    r: &Request,
    origin: (i64, &str),
) -> Result<()> {
    let deadline =
        ts(chrono::Utc::now() + chrono::Duration::from_std(r.plan.timeout()).unwrap_or_default());
    conn.run(
        "INSERT INTO approvals (run_id, incident_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending')",
        params![run, incident, runbook, r.step, r.index, r.plan.prompt, now(), deadline, r.plan.on_timeout.as_str()],
    )?;
    let message = say::requested(run, runbook, r, &deadline);
    run_note(conn, incident, &message)?;
    super::outbox::enqueue(
        conn,
        incident,
        &crate::notify::Happened {
            event: crate::notify::Event::ApprovalRequested,
            runbook: Some(runbook),
            run_id: Some(run),
            step: Some(&r.step),
            detail: message,
        },
        Some(origin),
    )?;
    Ok(())
}

/// Queues a decided run again, and says so on its incident's timeline.
fn decided(conn: &Connection, a: &Approval, author: &str) -> Result<()> {
    let Some(incident): Option<i64> = conn
        .one(
            "UPDATE runs SET state = 'queued' WHERE id = ?1 AND state = 'awaiting_approval' RETURNING incident_id",
            [a.run_id],
            |r| r.get(0),
        )
        .optional()?
    else {
        tracing::warn!(run = a.run_id, "an approval was decided for a run that no longer waits");
        return Ok(());
    };
    timeline(conn, incident, author, "approval", &say::decided(a), None)?;
    conn.run(
        "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
        params![incident, now()],
    )?;
    Ok(())
}

/// The first decision on a run's pending approval.
fn decide(
    conn: &Connection,
    run: i64,
    approval: i64,
    decision: Decision,
    who: &str,
    comment: Option<&str>,
) -> Result<Approval> {
    let taken = conn
        .one(
            &format!(
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4, comment = ?5
                 WHERE id = ?6 AND run_id = ?1 AND id = (SELECT MAX(id) FROM approvals WHERE run_id = ?1)
                   AND state = 'pending' AND deadline > ?4
                 RETURNING {COLUMNS}"
            ),
            params![run, decision.state().as_str(), who, now(), comment, approval],
            row,
        )
        .optional()?;
    if let Some(a) = taken {
        decided(conn, &a, who)?;
        return Ok(a);
    }
    Err(undecidable(conn, run, approval)?)
}

/// Why a run's approval cannot be decided (the conflict, or not found).
fn undecidable(conn: &Connection, run: i64, approval: i64) -> Result<StoreError> {
    let state: Option<String> = conn
        .one("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()?;
    let Some(state) = state else {
        return Ok(StoreError::NotFound(format!("run {run}")));
    };
    let last = conn
        .one(
            &format!("SELECT {COLUMNS} FROM approvals WHERE run_id = ?1 ORDER BY id DESC LIMIT 1"),
            [run],
            row,
        )
        .optional()?;
    Ok(StoreError::Conflict(crate::approval::conflict(
        run,
        approval,
        &state,
        last.as_ref(),
    )))
}

/// Decides the approvals whose deadline passed, by their `on_timeout`.
fn expire(conn: &Connection) -> Result<usize> {
    let due: Vec<Approval> = conn
        .prepare_cached(&format!(
            "UPDATE approvals SET state = 'timed_out', decided_by = 'runbookd', decided_at = ?1
             WHERE state = 'pending' AND deadline <= ?1 RETURNING {COLUMNS}"
        ))?
        .query_map([now()], row)?
        .collect::<rusqlite::Result<_>>()?;
    for a in &due {
        decided(conn, a, "runbookd")?;
    }
    Ok(due.len())
}

/// Withdraws a cancelled run's pending approval.
pub(super) fn withdraw(conn: &Connection, run: i64) -> Result<()> {
    conn.run(
        "UPDATE approvals SET state = 'cancelled', decided_at = ?2 WHERE run_id = ?1 AND state = 'pending'",
        params![run, now()],
    )?;
    Ok(())
}

/// A queued run to resume: its steps before the pause and the decision.
pub(super) fn resume(conn: &Connection, run: i64) -> Result<Option<Resume>> {
    let result: Option<String> =
        conn.one("SELECT result FROM runs WHERE id = ?1", [run], |r| r.get(0))?;
    let Some(RunDetail::Executed(prior)) =
        run_detail(result.as_deref()).map_err(StoreError::Invalid)?
    else {
        return Ok(None);
    };
    let approval = conn
        .one(
            &format!("SELECT {COLUMNS} FROM approvals WHERE run_id = ?1 ORDER BY id DESC LIMIT 1"),
            [run],
            row,
        )
        .optional()?;
    Ok(approval
        .filter(|a| a.state != ApprovalState::Pending && a.state != ApprovalState::Cancelled)
        .map(|approval| Resume { prior, approval }))
}

/// An incident's approvals, oldest first.
pub(super) fn of_incident(conn: &Connection, incident: i64) -> Result<Vec<Approval>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE incident_id = ?1 ORDER BY id"
        ))?
        .query_map([incident], row)?
        .collect::<rusqlite::Result<_>>()?)
}

impl Sqlite {
    #[must_use]
    pub fn decide(
        &self,
        run: i64,
        approval: i64,
        decision: Decision,
        who: String,
        comment: Option<String>,
    ) -> Pending<Approval> {
        Box::pin(self.write(move |c| decide(c, run, approval, decision, &who, comment.as_deref())))
    }

    #[must_use]
    pub fn expire_approvals(&self) -> Pending<usize> {
        Box::pin(self.write(expire))
    }

    /// Whether an approval's deadline has passed (a cheap read first).
    pub async fn approvals_due(&self) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM approvals WHERE state = 'pending' AND deadline <= ?1)",
                [now()],
                |r| r.get(0),
            )?)
        })
        .await
    }
}
