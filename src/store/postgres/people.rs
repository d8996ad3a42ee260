//! People working an incident on PostgreSQL: who ticked what, and the
//! operations of [`crate::store::flow::people`] in a transaction.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::driver::Conn;
use super::Postgres;
use crate::incident::{ChecklistItem, IncidentId};
use crate::store::flow;
use crate::store::types::{ts, HandOver, Rerun, Tick, Ticks};
use crate::store::Pending;

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

impl Postgres {
    #[must_use]
    pub fn tick(&self, id: IncidentId, t: Tick) -> Pending<ChecklistItem> {
        transaction!(self, |tx| flow::people::tick(&Conn(&tx), id, &t).await)
    }

    #[must_use]
    pub fn hand_over(&self, id: IncidentId, to: String, by: String) -> Pending<HandOver> {
        transaction!(self, |tx| flow::people::hand_over(&Conn(&tx), id, &to, &by)
            .await)
    }

    #[must_use]
    pub fn rerun(&self, run: i64, who: String) -> Pending<Rerun> {
        transaction!(self, |tx| flow::people::rerun(&Conn(&tx), run, &who).await)
    }
}
