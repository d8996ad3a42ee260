//! People working an incident, on SQLite: its commander, the checklist
//! items they tick, the runs they re-run (see `schema_v11.sql`).

use rusqlite::{params, Connection, OptionalExtension};

use super::ops::{advance, timeline};
use super::{Cached, Sqlite};
use crate::incident::{ChecklistItem, IncidentId, IncidentStatus, RunState};
use crate::lifecycle;
use crate::store::types::{
    checklist, now, pick, run_detail, say, ChecklistRun, HandOver, Rerun, Tally, Tick, Ticks,
    CURRENT_REMEDIATION_STATES,
};
use crate::store::{Pending, Result, StoreError};

/// Who ticked which checklist items of `incident`'s runs.
pub(super) fn ticks(conn: &Connection, incident: i64) -> Result<Ticks> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.run_id, d.step, d.done_by, d.done_at FROM checklist_done d JOIN runs r ON r.id = d.run_id WHERE r.incident_id = ?1",
    )?;
    let rows = stmt
        .query_map([incident], |r| {
            Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The lifecycle's count of `incident`'s current remediation runs.
pub(super) fn tally(conn: &Connection, incident: i64) -> Result<Tally> {
    let states = conn
        .prepare_cached(CURRENT_REMEDIATION_STATES)?
        .query_map([incident], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let states = states
        .iter()
        .map(|s| s.parse::<RunState>().map_err(StoreError::Invalid))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tally::of(states))
}

/// `incident`'s checklist as the store holds it now.
fn items(conn: &Connection, incident: i64, ticks: &Ticks) -> Result<Vec<ChecklistItem>> {
    let rows: Vec<(i64, String, i64, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, runbook, COALESCE(rerun_of, id), result FROM runs WHERE incident_id = ?1 ORDER BY id",
        )?
        .query_map([incident], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let details = rows
        .iter()
        .map(|(_, _, _, raw)| run_detail(raw.as_deref()).map_err(StoreError::Invalid))
        .collect::<Result<Vec<_>>>()?;
    let runs: Vec<ChecklistRun<'_>> = rows
        .iter()
        .zip(&details)
        .map(|((id, runbook, lineage, _), d)| ChecklistRun {
            id: *id,
            runbook,
            lineage: *lineage,
            result: d.as_ref(),
        })
        .collect();
    Ok(checklist(&runs, ticks))
}

fn tick(conn: &Connection, id: IncidentId, t: &Tick) -> Result<ChecklistItem> {
    let status: Option<String> = conn
        .one("SELECT status FROM incidents WHERE id = ?1", [id.0], |r| {
            r.get(0)
        })
        .optional()?;
    if status.is_none() {
        return Err(StoreError::NotFound(id.to_string()));
    }
    let mut ticks = ticks(conn, id.0)?;
    let before = items(conn, id.0, &ticks)?;
    let item = pick(&before, t, id)?.clone();
    if item.is_open() != t.done {
        return Ok(item);
    }
    let key = (item.run_id, item.step.clone());
    if t.done {
        let at = now();
        conn.run(
            "INSERT INTO checklist_done (run_id, step, done_by, done_at) VALUES (?1, ?2, ?3, ?4)",
            params![item.run_id, item.step, t.who, at],
        )?;
        ticks.insert(key.clone(), (t.who.clone(), at));
    } else {
        conn.run(
            "DELETE FROM checklist_done WHERE run_id = ?1 AND step = ?2",
            params![item.run_id, item.step],
        )?;
        ticks.remove(&key);
    }
    let message = say::ticked(&t.who, item.run_id, &item.step, &item.text, t.done);
    timeline(conn, id.0, &t.who, "update", &message, None)?;
    conn.run(
        "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
        params![id.0, now()],
    )?;
    let after = items(conn, id.0, &ticks)?;
    advance(
        conn,
        id.0,
        lifecycle::Event::ChecklistChanged {
            open: after.iter().filter(|i| i.is_open()).count(),
            remediation_not_succeeded: tally(conn, id.0)?.not_succeeded,
        },
    )?;
    Ok(after
        .into_iter()
        .find(|i| (i.run_id, &i.step) == (key.0, &key.1))
        .unwrap_or(item))
}

fn hand_over(conn: &Connection, id: IncidentId, to: &str, by: &str) -> Result<HandOver> {
    let row: Option<(Option<String>, bool)> = conn
        .one(
            "SELECT commander, acknowledged_at IS NOT NULL FROM incidents WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((mut previous, acked)) = row else {
        return Err(StoreError::NotFound(id.to_string()));
    };
    if !acked {
        // Handing command over is taking the incident on.
        super::outbox::acknowledge(conn, id, by)?;
        previous = conn.one(
            "SELECT commander FROM incidents WHERE id = ?1",
            [id.0],
            |r| r.get(0),
        )?;
    }
    if previous.as_deref() == Some(to) {
        return Ok(HandOver {
            commander: to.to_owned(),
            previous: None,
            changed: false,
        });
    }
    conn.run(
        "UPDATE incidents SET commander = ?2, updated_at = ?3 WHERE id = ?1",
        params![id.0, to, now()],
    )?;
    let message = say::handed_over(by, previous.as_deref(), to);
    timeline(conn, id.0, by, "update", &message, None)?;
    Ok(HandOver {
        commander: to.to_owned(),
        previous,
        changed: true,
    })
}

fn rerun(conn: &Connection, run: i64, who: &str) -> Result<Rerun> {
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        String,
        String,
        i64,
        bool,
        String,
    );
    let row: Option<Row> = conn
        .one(
            "SELECT r.incident_id, r.notification_id, r.runbook, r.fingerprint, r.starts_at, r.phase, r.state,
                    COALESCE(r.rerun_of, r.id), r.idempotent, i.status
             FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = ?1",
            [run],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            },
        )
        .optional()?;
    let Some((
        incident,
        notification,
        runbook,
        fingerprint,
        starts,
        phase,
        state,
        lineage,
        idempotent,
        status,
    )) = row
    else {
        return Err(StoreError::NotFound(format!("run {run}")));
    };
    let state: RunState = state.parse().map_err(StoreError::Invalid)?;
    let status: IncidentStatus = status.parse().map_err(StoreError::Invalid)?;
    let busy: Option<i64> = conn
        .one(
            "SELECT id FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = ?3 AND state IN ('queued', 'running', 'awaiting_approval')",
            params![runbook, fingerprint, phase],
            |r| r.get(0),
        )
        .optional()?;
    crate::store::types::may_rerun(run, state, IncidentId(incident), status, &runbook, busy)?;
    let next: i64 = conn.one(
        "SELECT COALESCE(MAX(rerun), 0) + 1 FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND starts_at = ?3 AND phase = ?4",
        params![runbook, fingerprint, starts, phase],
        |r| r.get(0),
    )?;
    conn.run(
        "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent, rerun_of, rerun)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?10)",
        params![incident, notification, runbook, fingerprint, starts, phase, now(), idempotent, lineage, next],
    )?;
    let id = conn.last_insert_rowid();
    timeline(
        conn,
        incident,
        who,
        "run",
        &say::rerun(who, run, &runbook, id),
        None,
    )?;
    conn.run(
        "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
        params![incident, now()],
    )?;
    Ok(Rerun {
        incident: IncidentId(incident),
        run: id,
        rerun_of: lineage,
    })
}

impl Sqlite {
    #[must_use]
    pub fn tick(&self, id: IncidentId, t: Tick) -> Pending<ChecklistItem> {
        Box::pin(self.write(move |c| tick(c, id, &t)))
    }

    #[must_use]
    pub fn hand_over(&self, id: IncidentId, to: String, by: String) -> Pending<HandOver> {
        Box::pin(self.write(move |c| hand_over(c, id, &to, &by)))
    }

    #[must_use]
    pub fn rerun(&self, run: i64, who: String) -> Pending<Rerun> {
        Box::pin(self.write(move |c| rerun(c, run, &who)))
    }
}
