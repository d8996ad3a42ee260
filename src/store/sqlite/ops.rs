//! The SQLite backend's operations: each write runs inside one savepoint of
//! a group transaction, each query on a read connection.

use crate::timestamp::Timestamp;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::driver::{at_once, Conn};
use super::{parsed, Cached, Sqlite};
use crate::incident::{IncidentDetail, IncidentId, IncidentSummary, RunState};
use crate::store::flow;
use crate::store::types::{incident_filter, ts};
use crate::store::{IncidentFilter, LiveChunk, Pending, Result, Stats, UnmatchedAlert};

/// The columns of an incident summary ([`summary_columns`]), on SQLite.
///
/// [`summary_columns`]: crate::store::types::summary_columns
pub(super) static SUMMARY_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::store::types::summary_columns(|l| format!("json_extract(labels, '$.{l}')"))
});

pub(super) fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentSummary> {
    let created: Timestamp = r.get("created_at")?;
    let resolved: Option<Timestamp> = r.get("resolved_at")?;
    let ended: Option<Timestamp> = r.get("alerts_ended_at")?;
    let end = resolved.map_or_else(Utc::now, Timestamp::instant);
    let start = created.instant();
    let severity: crate::runbook::Severity =
        r.get::<_, String>("severity")?
            .parse()
            .map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
    Ok(IncidentSummary {
        id: IncidentId(r.get("id")?),
        title: r.get("title")?,
        severity,
        // A status this version does not know is an error that names it
        // (as on PostgreSQL), never shown as `investigating`.
        status: r.get::<_, String>("status")?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        escalated: r.get("escalated")?,
        run_failed: r.get("run_failed")?,
        services: serde_json::from_str(&r.get::<_, String>("services")?).unwrap_or_default(),
        runbooks: serde_json::from_str(&r.get::<_, String>("runbooks")?).unwrap_or_default(),
        receiver: r.get("receiver")?,
        group_key: r.get("group_key")?,
        shadow: r.get("shadow")?,
        drill: r.get::<_, String>("receiver")? == crate::alert::DRILL_RECEIVER,
        created_at: created,
        updated_at: r.get("updated_at")?,
        resolved_at: resolved,
        recovered_seconds: ended.map(|t| (t.instant() - start).num_seconds().max(0)),
        alerts_ended_at: ended,
        alert_count: r.get("alert_count")?,
        firing_count: r.get("firing_count")?,
        subject: r.get("subject")?,
        duration_seconds: (end - start).num_seconds(),
        acknowledged_at: r.get("acknowledged_at")?,
        acknowledged_by: r.get("acknowledged_by")?,
        commander: r.get("commander")?,
        awaiting_approval: r.get("awaiting_approval")?,
        grouped_by: crate::incident::grouped_by(&r.get::<_, String>("group_key")?),
        slo_affecting: crate::store::types::slo_affecting(r.get("slo_affecting")?, severity),
        slo_budget: r.get("slo_budget")?,
        postmortem_required: r.get("postmortem_required")?,
    })
}

impl Sqlite {
    /// Lists incidents, open ones first, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn incidents(&self, f: IncidentFilter) -> Result<(Vec<IncidentSummary>, i64)> {
        self.read(move |conn| {
            let (sql, args) = incident_filter(&f, '?');
            let total: i64 = conn.one(&format!("SELECT COUNT(*){sql}"), rusqlite::params_from_iter(&args), |r| r.get(0))?;
            let (limit, offset) = f.page();
            let mut stmt = conn.prepare(&format!("SELECT {}{sql} ORDER BY (status = 'resolved'), id DESC LIMIT {limit} OFFSET {offset}", *SUMMARY_COLUMNS))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(&args), summary)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
        .await
    }

    /// Everything about one incident.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or a database error.
    pub async fn incident(&self, id: IncidentId) -> Result<IncidentDetail> {
        self.read(move |c| at_once(flow::reads::incident(&Conn(c), id)))
            .await
    }

    /// Counts and MTTR over the incidents opened within `window`.
    ///
    /// # Errors
    /// A database error.
    pub async fn stats(&self, window: Duration) -> Result<Stats> {
        self.read(move |conn| {
            let since = ts(Utc::now() - chrono::Duration::from_std(window).unwrap_or_default());
            let (opened, resolved, mttr, mttr_notified): (i64, i64, Option<f64>, Option<f64>) = conn.one(
                "SELECT COUNT(*), COUNT(resolved_at),
                        AVG(CASE WHEN resolved_at IS NOT NULL THEN (julianday(COALESCE(alerts_ended_at, resolved_at)) - julianday(created_at)) * 86400.0 END),
                        AVG(CASE WHEN resolved_at IS NOT NULL THEN (julianday(resolved_at) - julianday(created_at)) * 86400.0 END)
                 FROM incidents WHERE created_at >= ?1",
                [&since],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let open: i64 = conn.one("SELECT COUNT(*) FROM incidents WHERE status != 'resolved' AND receiver != 'runbookd-drill'", [], |r| r.get(0))?;
            let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM runs WHERE queued_at >= ?1 GROUP BY state")?;
            let runs = stmt.query_map([&since], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?.collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()?;
            let queued: i64 = conn.one("SELECT n FROM queue_depth", [], |r| r.get(0))?;
            let notifications: i64 = conn.one("SELECT COUNT(*) FROM notifications WHERE received_at >= ?1", [&since], |r| r.get(0))?;
            Ok(Stats { window_seconds: window.as_secs(), incidents_opened: opened, incidents_resolved: resolved, incidents_open: open, mttr_seconds: mttr, mttr_notified_seconds: mttr_notified, runs_by_state: runs, queued_runs: queued, notifications })
        })
        .await
    }
}

impl Sqlite {
    /// The shared SLO statuses (JSON), when they were read and how long
    /// that took.
    pub async fn slo_statuses(&self) -> Result<(Vec<String>, Option<String>, i64)> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT status, refreshed_at, took_ms FROM slo_status ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let at = rows.first().map(|r| r.1.clone());
            let took = rows.first().map_or(0, |r| r.2);
            Ok((rows.into_iter().map(|r| r.0).collect(), at, took))
        })
        .await
    }

    /// Incidents resolved since `since` whose SLO budget is not recorded
    /// yet, the earliest resolved first.
    pub async fn slo_budget_due(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<IncidentSummary>> {
        let since = crate::store::types::ts(since);
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {} FROM incidents i WHERE status = 'resolved' AND slo_budget IS NULL AND resolved_at >= ?1 ORDER BY resolved_at, id LIMIT ?2",
                *SUMMARY_COLUMNS
            ))?;
            let rows = stmt
                .query_map(params![since, limit], summary)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Firing alerts no runbook matched, most recently seen first.
    ///
    /// # Errors
    /// A database error.
    pub async fn unmatched(&self, limit: u32) -> Result<Vec<UnmatchedAlert>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT fingerprint, alertname, labels, receiver, first_seen, last_seen, seen FROM unmatched_alerts ORDER BY last_seen DESC LIMIT ?1")?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok(UnmatchedAlert {
                        fingerprint: r.get(0)?,
                        alertname: r.get(1)?,
                        labels: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                        receiver: r.get(3)?,
                        first_seen: r.get(4)?,
                        last_seen: r.get(5)?,
                        seen: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

impl Sqlite {
    /// (queued runs, open incidents), cheaply, for the metrics gauges.
    ///
    /// # Errors
    /// A database error.
    pub async fn gauges(&self) -> Result<crate::store::Gauges> {
        self.read(|conn| {
            let queued: i64 = conn.one("SELECT n FROM queue_depth", [], |r| r.get(0))?;
            let open: i64 = conn.one(
                "SELECT COUNT(*) FROM incidents WHERE status != 'resolved' AND receiver != 'runbookd-drill'",
                [],
                |r| r.get(0),
            )?;
            let awaiting: i64 = conn.one(
                "SELECT COUNT(*) FROM approvals WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            let (outbox_backlog, outbox_dead): (i64, i64) = conn.one(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'dead')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(crate::store::Gauges {
                queued,
                open,
                awaiting,
                outbox_backlog,
                outbox_dead,
            })
        })
        .await
    }
}

impl Sqlite {
    /// Live output of an incident's running steps after `cursor`, and whether
    /// any of its runs is still queued or running.
    ///
    /// # Errors
    /// A database error.
    pub async fn live(&self, id: IncidentId, cursor: i64) -> Result<(Vec<LiveChunk>, bool)> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT o.rowid, o.run_id, o.step, o.stream, o.chunk FROM step_output o JOIN runs r ON r.id = o.run_id
                 WHERE r.incident_id = ?1 AND o.rowid > ?2 ORDER BY o.rowid LIMIT 500",
            )?;
            let chunks = stmt
                .query_map(params![id.0, cursor], |r| {
                    Ok(LiveChunk { cursor: r.get(0)?, run: r.get(1)?, step: r.get(2)?, stream: r.get(3)?, text: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(4)?).into_owned() })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let active: bool = conn.one("SELECT EXISTS (SELECT 1 FROM runs WHERE incident_id = ?1 AND state IN ('queued', 'running', 'awaiting_approval'))", [id.0], |r| r.get(0))?;
            Ok((chunks, active))
        })
        .await
    }

    /// A run's incident, runbook and alert fingerprint.
    ///
    /// # Errors
    /// A database error.
    pub async fn run_origin(&self, id: i64) -> Result<Option<(IncidentId, String, String)>> {
        self.read(move |conn| {
            Ok(conn
                .one(
                    "SELECT incident_id, runbook, fingerprint FROM runs WHERE id = ?1",
                    [id],
                    |r| Ok((IncidentId(r.get(0)?), r.get(1)?, r.get(2)?)),
                )
                .optional()?)
        })
        .await
    }

    /// The latest runs of a runbook, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn recent_runs(
        &self,
        runbook: String,
        limit: u32,
    ) -> Result<Vec<(i64, IncidentId, RunState)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, incident_id, state FROM runs WHERE runbook = ?1 ORDER BY id DESC LIMIT ?2")?;
            let rows = stmt.query_map(params![runbook, limit], |r| Ok((r.get(0)?, IncidentId(r.get(1)?), parsed(r, 2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

/// The interface's writes: each queued on the writer when called.
impl Sqlite {
    /// One process holds the store: it leads.
    #[allow(clippy::unused_self)]
    #[must_use]
    pub fn lead(&self, _owner: String, _lease: Duration) -> Pending<bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    pub async fn ping(&self) -> Result<()> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())?)
        })
        .await
    }
}
