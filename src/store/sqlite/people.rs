//! People working an incident on SQLite (see `schema_v11.sql`): who ticked
//! what, and the operations of [`crate::store::flow::people`] on the writer.

use rusqlite::Connection;

use super::driver::{at_once, Conn};
use super::Sqlite;
use crate::incident::{ChecklistItem, IncidentId};
use crate::store::flow;
use crate::store::types::{HandOver, Rerun, Tick, Ticks};
use crate::store::{Pending, Result};

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

impl Sqlite {
    #[must_use]
    pub fn tick(&self, id: IncidentId, t: Tick) -> Pending<ChecklistItem> {
        Box::pin(self.write(move |c| at_once(flow::people::tick(&Conn(c), id, &t))))
    }

    #[must_use]
    pub fn hand_over(&self, id: IncidentId, to: String, by: String) -> Pending<HandOver> {
        Box::pin(self.write(move |c| at_once(flow::people::hand_over(&Conn(c), id, &to, &by))))
    }

    #[must_use]
    pub fn rerun(&self, run: i64, who: String) -> Pending<Rerun> {
        Box::pin(self.write(move |c| at_once(flow::people::rerun(&Conn(c), run, &who))))
    }
}
