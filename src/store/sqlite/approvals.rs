//! Approvals on SQLite: the rows, and the operations of
//! [`crate::store::flow::approvals`] on the writer.

use rusqlite::Connection;

use super::Sqlite;
use crate::approval::Approval;
use crate::store::types::now;
use crate::store::Result;

pub(super) const COLUMNS: &str = "id, run_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state, decided_by, decided_at, comment";

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
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
