//! The SQLite driver: each method one statement on the writer's
//! connection, run synchronously (the futures are ready when first polled;
//! [`at_once`] runs a flow operation to its end in one poll).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::approvals::{row as approval_row, COLUMNS as APPROVAL_COLUMNS};
use super::ops::{summary, SUMMARY_COLUMNS};
use super::{parsed, Cached};
use crate::alert::{Alert, Notification, Status};
use crate::approval::{Approval, Decision, Request};
use crate::incident::notices::{
    About, DeliveryState, EscalationRecord, MessageRecord, OutboxItem, Queue, Settle, TimerState,
};
use crate::incident::{
    AlertRecord, IncidentStatus, IncidentSummary, OutputChunk, RunRecord, RunState, TimelineEntry,
};
use crate::lifecycle;
use crate::plan::Phase;
use crate::runbook::notify::{Escalation, Event, Unless};
use crate::runbook::Severity;
use crate::store::driver::{
    ChecklistRow, ClaimedRun, DueEscalation, EndedRun, OpenIncident, RemediationInProgress,
    RerunSource, RunContext, RunToCancel, RunningRun, Taken, UnnotedStart,
};
use crate::store::types::{
    budget_item, json, now, run_detail, shortened, ts, Ticks, CURRENT_REMEDIATION_STATES,
    LIVE_TAIL, UNMATCHED_KEPT,
};
use crate::store::{GateOverride, Lease, Result, RunbookMatch, ServiceEntry, StoreError};

/// The statements of one write (or read) on `0`'s connection.
pub(in crate::store) struct Conn<'c>(pub &'c Connection);

/// Runs a flow operation over [`Conn`] to its end: SQLite's statements
/// complete when first polled, so one poll finishes it.
pub(in crate::store) fn at_once<T>(op: impl Future<Output = Result<T>>) -> Result<T> {
    match pin!(op).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(StoreError::Backend(
            "a SQLite store operation waited for something other than a statement".into(),
        )),
    }
}

/// `d` before now, as stored.
fn ago(d: Duration) -> String {
    ts(Utc::now() - chrono::Duration::from_std(d).unwrap_or_default())
}

/// `d` after now, as stored: at the latest the last instant of year 9999,
/// the last RFC 3339 can write (and the last that sorts as text among the
/// others). Runbooks' durations stop at ten years (`duration::parse`); a
/// longer one handed to the store waits until then, where it was written
/// as `+10000-…` (or as now, past chrono's range): due at once in the
/// text order due timers are found by, and unreadable.
fn later(d: Duration) -> String {
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc());
    let due = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .map_or(last, |t| t.min(last));
    ts(due)
}

impl crate::store::driver::Driver for Conn<'_> {
    type Fail = StoreError;

    async fn timeline(
        &self,
        incident: i64,
        author: &str,
        kind: &str,
        message: &str,
        status: Option<IncidentStatus>,
    ) -> Result<()> {
        self.0.run(
            "INSERT INTO timeline (incident_id, at, author, kind, message, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![incident, now(), author, kind, message, status.map(IncidentStatus::as_str)],
        )?;
        Ok(())
    }

    async fn touch(&self, incident: i64) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
            params![incident, now()],
        )?;
        Ok(())
    }

    async fn lifecycle(&self, incident: i64) -> Result<lifecycle::Incident> {
        let (status, run_failed): (String, bool) = self.0.one(
            "SELECT status, run_failed FROM incidents WHERE id = ?1",
            [incident],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(lifecycle::Incident {
            status: status.parse().map_err(StoreError::Invalid)?,
            run_failed,
        })
    }

    async fn set_status(
        &self,
        incident: i64,
        status: IncidentStatus,
        run_failed: Option<bool>,
    ) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET status = ?2, run_failed = COALESCE(?3, run_failed), updated_at = ?4,
                 resolved_at = CASE WHEN ?2 = 'resolved' THEN ?4 ELSE resolved_at END WHERE id = ?1",
            params![incident, status.as_str(), run_failed, now()],
        )?;
        Ok(())
    }

    /// One writer: nothing else reads or writes meanwhile.
    async fn lock_run_incident(&self, _run: i64) -> Result<()> {
        Ok(())
    }

    async fn lock_incident(&self, incident: i64) -> Result<bool> {
        Ok(self
            .0
            .one("SELECT 1 FROM incidents WHERE id = ?1", [incident], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    async fn policies(&self, incident: i64) -> Result<(String, bool)> {
        Ok(self.0.one(
            "SELECT notify, shadow FROM incidents WHERE id = ?1",
            [incident],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    async fn set_policies(&self, incident: i64, json: &str) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET notify = ?2 WHERE id = ?1",
            params![incident, json],
        )?;
        Ok(())
    }

    async fn outbox_insert(
        &self,
        about: &About,
        q: &Queue,
        state: DeliveryState,
        source: Option<(i64, &str)>,
    ) -> Result<()> {
        let (incident, service) = about.columns();
        self.0.run(
            "INSERT INTO outbox (incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, created_at, next_at, service)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)",
            params![
                incident,
                source.map(|s| s.0),
                source.map(|s| s.1),
                q.notifier,
                q.event.as_str(),
                q.runbook,
                q.run_id,
                q.step,
                q.detail,
                q.template,
                state.as_str(),
                now(),
                service
            ],
        )?;
        Ok(())
    }

    async fn escalation_arm(
        &self,
        incident: i64,
        runbook: &str,
        rule: usize,
        e: &Escalation,
    ) -> Result<()> {
        self.0.run(
            "INSERT INTO escalations (incident_id, runbook, rule, due_at, notify, unless_, message, after_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending') ON CONFLICT DO NOTHING",
            params![
                incident,
                runbook,
                i64::try_from(rule).unwrap_or(i64::MAX),
                later(e.after),
                json(&e.notify),
                json(&e.unless),
                e.message,
                i64::try_from(e.after.as_millis()).unwrap_or(i64::MAX),
            ],
        )?;
        Ok(())
    }

    async fn escalations_cancel(
        &self,
        incident: i64,
        unless: Option<Unless>,
        runbook: Option<&str>,
        reason: &str,
    ) -> Result<u64> {
        let pattern = unless.map(|u| format!("%\"{}\"%", u.as_str()));
        let n = self.0.run(
            "UPDATE escalations SET state = 'cancelled', ended_at = ?3, reason = ?4
             WHERE incident_id = ?1 AND state = 'pending' AND (?2 IS NULL OR unless_ LIKE ?2) AND (?5 IS NULL OR runbook = ?5)",
            params![incident, pattern, now(), reason, runbook],
        )?;
        Ok(n as u64)
    }

    async fn escalations_due(&self) -> Result<Vec<DueEscalation>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT e.id, e.incident_id, e.runbook, e.notify, e.unless_, e.message, e.after_ms,
                        i.status, i.acknowledged_at IS NOT NULL, i.shadow,
                        EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = e.incident_id AND r.runbook = e.runbook AND r.phase = 'remediation' AND r.state IN ('succeeded', 'succeeded_with_failures'))
                 FROM escalations e JOIN incidents i ON i.id = e.incident_id
                 WHERE e.state = 'pending' AND e.due_at <= ?1 ORDER BY e.due_at LIMIT 100",
            )?
            .query_map([now()], |r| {
                Ok(DueEscalation {
                    id: r.get(0)?,
                    incident: r.get(1)?,
                    runbook: r.get(2)?,
                    notify: r.get(3)?,
                    unless: r.get(4)?,
                    message: r.get(5)?,
                    after_ms: r.get(6)?,
                    status: parsed(r, 7)?,
                    acknowledged: r.get(8)?,
                    shadow: r.get(9)?,
                    succeeded: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn escalation_end(&self, id: i64, state: TimerState, reason: &str) -> Result<bool> {
        Ok(self.0.run(
            "UPDATE escalations SET state = ?2, ended_at = ?3, reason = ?4 WHERE id = ?1 AND state = 'pending'",
            params![id, state.as_str(), now(), reason],
        )? == 1)
    }

    async fn mark_escalated(&self, incident: i64) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET escalated = 1, updated_at = ?2 WHERE id = ?1",
            params![incident, now()],
        )?;
        Ok(())
    }

    async fn acknowledgement(&self, incident: i64) -> Result<Option<(bool, bool)>> {
        Ok(self
            .0
            .one(
                "SELECT acknowledged_at IS NOT NULL, commander IS NOT NULL FROM incidents WHERE id = ?1",
                [incident],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    async fn acknowledge(&self, incident: i64, who: &str) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET acknowledged_at = ?2, acknowledged_by = ?3, commander = COALESCE(commander, ?3), updated_at = ?2 WHERE id = ?1",
            params![incident, now(), who],
        )?;
        Ok(())
    }

    async fn outbox_take(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<(i64, u32)>> {
        Ok(self
            .0
            .prepare_cached(
                "UPDATE outbox SET state = 'sending', owner = ?2, lease_until = ?3, attempts = attempts + 1
                 WHERE id IN (SELECT o.id FROM outbox o WHERE ((o.state = 'pending' AND o.next_at <= ?1) OR (o.state = 'sending' AND o.lease_until < ?1))
                              AND NOT EXISTS (SELECT 1 FROM outbox p WHERE (p.incident_id = o.incident_id OR (p.incident_id IS NULL AND o.incident_id IS NULL AND p.service = o.service)) AND p.notifier = o.notifier AND p.id < o.id AND p.state IN ('pending', 'sending'))
                              ORDER BY o.next_at LIMIT ?4)
                 RETURNING id, attempts",
            )?
            .query_map(params![now(), owner, later(lease), limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn outbox_item(&self, id: i64, attempt: u32) -> Result<OutboxItem> {
        Ok(self.0.one(
            "SELECT o.notifier, o.event, o.incident_id, i.title, i.severity, i.status, i.services, o.runbook, o.run_id, o.step, o.detail, o.template, o.created_at,
                    n.body, o.fingerprint, o.service
             FROM outbox o LEFT JOIN incidents i ON i.id = o.incident_id
             LEFT JOIN notifications n ON n.id = COALESCE(o.notification_id, (SELECT MAX(id) FROM notifications WHERE incident_id = o.incident_id))
             WHERE o.id = ?1",
            [id],
            |r| {
                let created: String = r.get(12)?;
                let event: Event = parsed(r, 1)?;
                let about = About::of(r.get(2)?, r.get(15)?);
                let (title, severity, status, services) = match &about {
                    About::Incident(_) => (
                        r.get(3)?,
                        parsed(r, 4)?,
                        parsed(r, 5)?,
                        serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    ),
                    About::Budget(service) => budget_item(service, event),
                };
                Ok(OutboxItem {
                    id,
                    attempt,
                    notifier: r.get(0)?,
                    event,
                    incident: about,
                    title,
                    severity,
                    status,
                    services,
                    runbook: r.get(7)?,
                    run_id: r.get(8)?,
                    step: r.get(9)?,
                    detail: r.get(10)?,
                    template: r.get(11)?,
                    created_at: DateTime::parse_from_rfc3339(&created)
                        .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc)),
                    body: r.get(13)?,
                    fingerprint: r.get(14)?,
                })
            },
        )?)
    }

    async fn outbox_settle(&self, id: i64, attempt: u32, s: &Settle) -> Result<bool> {
        let n = match s {
            Settle::Delivered => self.0.run(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?3, owner = NULL, lease_until = NULL, last_error = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, now()],
            )?,
            Settle::Retry { at, error } => self.0.run(
                "UPDATE outbox SET state = 'pending', next_at = ?3, last_error = ?4, owner = NULL, lease_until = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, ts(*at), error],
            )?,
            Settle::Defer { at } => self.0.run(
                "UPDATE outbox SET state = 'pending', next_at = ?3, attempts = attempts - 1, owner = NULL, lease_until = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, ts(*at)],
            )?,
            Settle::Dead { error } => self.0.run(
                "UPDATE outbox SET state = 'dead', last_error = ?3, owner = NULL, lease_until = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
                params![id, attempt, error],
            )?,
        };
        Ok(n == 1)
    }

    async fn outbox_state(&self, id: i64) -> Result<Option<DeliveryState>> {
        Ok(self
            .0
            .one("SELECT state FROM outbox WHERE id = ?1", [id], |r| {
                parsed(r, 0)
            })
            .optional()?)
    }

    async fn outbox_requeue(&self, id: i64) -> Result<()> {
        self.0.run(
            "UPDATE outbox SET state = 'pending', next_at = ?2, created_at = ?2, attempts = 0 WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    async fn approval_insert(
        &self,
        run: i64,
        incident: i64,
        runbook: &str,
        r: &Request,
    ) -> Result<String> {
        let deadline = later(r.plan.timeout());
        self.0.run(
            "INSERT INTO approvals (run_id, incident_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending')",
            params![run, incident, runbook, r.step, r.index, r.plan.prompt, now(), deadline, r.plan.on_timeout.as_str()],
        )?;
        Ok(deadline)
    }

    /// One writer: nothing to lock.
    async fn lock_run(&self, _run: i64) -> Result<()> {
        Ok(())
    }

    async fn requeue_awaiting(&self, run: i64) -> Result<Option<i64>> {
        Ok(self
            .0
            .one(
                "UPDATE runs SET state = 'queued' WHERE id = ?1 AND state = 'awaiting_approval' RETURNING incident_id",
                [run],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// One process: its claim loop is woken by the caller.
    async fn wake_claimers(&self) -> Result<()> {
        Ok(())
    }

    async fn approval_decide(
        &self,
        run: i64,
        approval: i64,
        decision: Decision,
        who: &str,
        comment: Option<&str>,
    ) -> Result<Option<Approval>> {
        Ok(self
            .0
            .one(
                &format!(
                    "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4, comment = ?5
                     WHERE id = ?6 AND run_id = ?1 AND id = (SELECT MAX(id) FROM approvals WHERE run_id = ?1)
                       AND state = 'pending' AND deadline > ?4
                     RETURNING {APPROVAL_COLUMNS}"
                ),
                params![run, decision.state().as_str(), who, now(), comment, approval],
                approval_row,
            )
            .optional()?)
    }

    async fn run_state(&self, run: i64) -> Result<Option<RunState>> {
        Ok(self
            .0
            .one("SELECT state FROM runs WHERE id = ?1", [run], |r| {
                parsed(r, 0)
            })
            .optional()?)
    }

    async fn run_result(&self, run: i64) -> Result<Option<String>> {
        Ok(self
            .0
            .one("SELECT result FROM runs WHERE id = ?1", [run], |r| r.get(0))?)
    }

    async fn last_approval(&self, run: i64) -> Result<Option<Approval>> {
        Ok(self
            .0
            .one(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = ?1 ORDER BY id DESC LIMIT 1"
                ),
                [run],
                approval_row,
            )
            .optional()?)
    }

    async fn approvals_due(&self) -> Result<Vec<(i64, i64)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, run_id FROM approvals WHERE state = 'pending' AND deadline <= ?1
                 ORDER BY incident_id, id",
            )?
            .query_map([now()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn approval_expire(&self, approval: i64) -> Result<Option<Approval>> {
        Ok(self
            .0
            .prepare_cached(&format!(
                "UPDATE approvals SET state = 'timed_out', decided_by = 'runbookd', decided_at = ?2
                 WHERE id = ?1 AND state = 'pending' AND deadline <= ?2 RETURNING {APPROVAL_COLUMNS}"
            ))?
            .query_row(params![approval, now()], approval_row)
            .optional()?)
    }

    async fn approvals_withdraw(&self, run: i64) -> Result<()> {
        self.0.run(
            "UPDATE approvals SET state = 'cancelled', decided_at = ?2 WHERE run_id = ?1 AND state = 'pending'",
            params![run, now()],
        )?;
        Ok(())
    }

    async fn ticks(&self, incident: i64) -> Result<Ticks> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT d.run_id, d.step, d.done_by, d.done_at FROM checklist_done d JOIN runs r ON r.id = d.run_id WHERE r.incident_id = ?1",
            )?
            .query_map([incident], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn checklist_runs(&self, incident: i64) -> Result<Vec<ChecklistRow>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, runbook, COALESCE(rerun_of, id), result FROM runs WHERE incident_id = ?1 ORDER BY id",
            )?
            .query_map([incident], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn tick_insert(
        &self,
        run: i64,
        step: &str,
        who: &str,
    ) -> Result<crate::timestamp::Timestamp> {
        let at = crate::timestamp::Timestamp::now();
        self.0.run(
            "INSERT INTO checklist_done (run_id, step, done_by, done_at) VALUES (?1, ?2, ?3, ?4)",
            params![run, step, who, at.to_string()],
        )?;
        Ok(at)
    }

    async fn tick_delete(&self, run: i64, step: &str) -> Result<()> {
        self.0.run(
            "DELETE FROM checklist_done WHERE run_id = ?1 AND step = ?2",
            params![run, step],
        )?;
        Ok(())
    }

    async fn remediation_states(&self, incident: i64) -> Result<Vec<RunState>> {
        Ok(self
            .0
            .prepare_cached(CURRENT_REMEDIATION_STATES)?
            .query_map([incident], |r| parsed(r, 0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn command(&self, incident: i64) -> Result<Option<(Option<String>, bool)>> {
        Ok(self
            .0
            .one(
                "SELECT commander, acknowledged_at IS NOT NULL FROM incidents WHERE id = ?1",
                [incident],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    async fn commander(&self, incident: i64) -> Result<Option<String>> {
        Ok(self.0.one(
            "SELECT commander FROM incidents WHERE id = ?1",
            [incident],
            |r| r.get(0),
        )?)
    }

    async fn set_commander(&self, incident: i64, to: &str) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET commander = ?2, updated_at = ?3 WHERE id = ?1",
            params![incident, to, now()],
        )?;
        Ok(())
    }

    async fn rerun_source(&self, run: i64) -> Result<Option<RerunSource>> {
        Ok(self
            .0
            .one(
                "SELECT r.incident_id, r.notification_id, r.runbook, r.fingerprint, r.starts_at, r.phase, r.state,
                        COALESCE(r.rerun_of, r.id), r.idempotent, i.status
                 FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = ?1",
                [run],
                |r| {
                    Ok(RerunSource {
                        incident: r.get(0)?,
                        notification: r.get(1)?,
                        runbook: r.get(2)?,
                        fingerprint: r.get(3)?,
                        starts_at: r.get(4)?,
                        phase: r.get(5)?,
                        state: parsed(r, 6)?,
                        lineage: r.get(7)?,
                        idempotent: r.get(8)?,
                        status: parsed(r, 9)?,
                    })
                },
            )
            .optional()?)
    }

    async fn run_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
        phase: &str,
    ) -> Result<Option<i64>> {
        Ok(self
            .0
            .one(
                "SELECT id FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = ?3 AND state IN ('queued', 'running', 'awaiting_approval')",
                params![runbook, fingerprint, phase],
                |r| r.get(0),
            )
            .optional()?)
    }

    async fn insert_rerun(&self, s: &RerunSource) -> Result<i64> {
        self.0.run(
            "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent, rerun_of, rerun)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9,
                     (SELECT COALESCE(MAX(rerun), 0) + 1 FROM runs WHERE runbook = ?3 AND fingerprint = ?4 AND starts_at = ?5 AND phase = ?6))",
            params![s.incident, s.notification, s.runbook, s.fingerprint, s.starts_at, s.phase, now(), s.idempotent, s.lineage],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    async fn renew(
        &self,
        owner: &str,
        runs: &[Lease],
        lease: Duration,
    ) -> Result<Vec<(i64, bool)>> {
        let (until, at) = (later(lease), now());
        let mut stmt = self.0.prepare_cached(
            "UPDATE runs SET lease_until = ?4, heard_at = ?5 WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'running' RETURNING cancel_requested",
        )?;
        let mut held = Vec::new();
        for l in runs {
            let cancel: Option<bool> = stmt
                .query_row(params![l.run_id, l.fence, owner, until, at], |r| r.get(0))
                .optional()?;
            held.extend(cancel.map(|c| (l.run_id, c)));
        }
        Ok(held)
    }

    async fn holds(&self, lease: Lease) -> Result<bool> {
        Ok(self.0.one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND fence = ?2 AND state = 'running')",
            params![lease.run_id, lease.fence],
            |r| r.get(0),
        )?)
    }

    async fn output_insert(&self, run: i64, step: &str, stream: &str, bytes: &[u8]) -> Result<()> {
        self.0.run(
            "INSERT INTO step_output (run_id, step, seq, stream, chunk) VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM step_output WHERE run_id = ?1), ?3, ?4)",
            params![run, step, stream, bytes],
        )?;
        Ok(())
    }

    async fn set_progress(&self, lease: Lease, json: &str) -> Result<()> {
        self.0.run(
            "UPDATE runs SET progress = ?3 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
            params![lease.run_id, lease.fence, json],
        )?;
        Ok(())
    }

    async fn end_run(
        &self,
        lease: Lease,
        state: RunState,
        result: &str,
        reason: &str,
    ) -> Result<Option<(EndedRun, RunContext)>> {
        let Some(ended) = self
            .0
            .one(
                "UPDATE runs SET state = ?3, ended_at = ?4, result = ?5, reason = ?6, owner = NULL, lease_until = NULL, progress = NULL
                 WHERE id = ?1 AND fence = ?2 AND state = 'running' RETURNING incident_id, runbook, phase, notification_id, fingerprint",
                params![lease.run_id, lease.fence, state.as_str(), now(), result, reason],
                ended_run,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let cx = crate::store::driver::Driver::run_context(self, ended.incident).await?;
        Ok(Some((ended, cx)))
    }

    async fn await_approval(
        &self,
        lease: Lease,
        result: &str,
        reason: &str,
    ) -> Result<Option<EndedRun>> {
        Ok(self
            .0
            .one(
                "UPDATE runs SET state = 'awaiting_approval', result = ?3, reason = ?4, owner = NULL, lease_until = NULL, progress = NULL
                 WHERE id = ?1 AND fence = ?2 AND state = 'running' AND NOT cancel_requested
                 RETURNING incident_id, runbook, phase, notification_id, fingerprint",
                params![lease.run_id, lease.fence, result, reason],
                ended_run,
            )
            .optional()?)
    }

    async fn prune_output(&self) -> Result<()> {
        self.0.run(
            "DELETE FROM step_output WHERE run_id IN (
                 SELECT s.run_id FROM (SELECT DISTINCT run_id FROM step_output) s JOIN runs r ON r.id = s.run_id
                 WHERE r.state NOT IN ('queued', 'running') AND r.ended_at < ?1)",
            [ts(Utc::now() - chrono::Duration::from_std(LIVE_TAIL).unwrap_or_default())],
        )?;
        Ok(())
    }

    async fn running(&self, expired: bool) -> Result<Vec<RunningRun>> {
        Ok(self
            .0
            .prepare_cached(&format!(
                "SELECT {RUNNING_COLUMNS} FROM runs WHERE state = 'running' AND (NOT ?1 OR lease_until < ?2) ORDER BY incident_id, id"
            ))?
            .query_map(params![expired, now()], running_row)?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn running_run(&self, run: i64, expired: bool) -> Result<Option<RunningRun>> {
        // The writer is the only one: nothing to lock.
        Ok(self
            .0
            .prepare_cached(&format!(
                "SELECT {RUNNING_COLUMNS} FROM runs WHERE id = ?1 AND state = 'running' AND (NOT ?2 OR lease_until < ?3)"
            ))?
            .query_row(params![run, expired, now()], running_row)
            .optional()?)
    }

    async fn run_output(&self, run: i64) -> Result<Vec<(String, String, Vec<u8>)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT step, stream, chunk FROM step_output WHERE run_id = ?1 ORDER BY seq",
            )?
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn drop_output(&self, run: i64) -> Result<()> {
        self.0
            .run("DELETE FROM step_output WHERE run_id = ?1", [run])?;
        Ok(())
    }

    async fn requeue(&self, run: i64) -> Result<()> {
        self.0.run(
            "UPDATE runs SET state = 'queued', owner = NULL, lease_until = NULL, progress = NULL, fence = fence + 1 WHERE id = ?1",
            [run],
        )?;
        Ok(())
    }

    async fn end_taken(
        &self,
        run: i64,
        state: RunState,
        reason: &str,
        result: Option<&str>,
    ) -> Result<()> {
        self.0.run(
            "UPDATE runs SET state = ?4, reason = ?2, ended_at = ?3, owner = NULL, lease_until = NULL, progress = NULL,
                 result = COALESCE(?5, result), fence = fence + 1 WHERE id = ?1",
            params![run, reason, now(), state.as_str(), result],
        )?;
        Ok(())
    }

    async fn run_to_cancel(&self, run: i64) -> Result<Option<RunToCancel>> {
        Ok(self
            .0
            .one(
                "SELECT state, incident_id, runbook, phase FROM runs WHERE id = ?1",
                [run],
                |r| {
                    Ok(RunToCancel {
                        state: parsed(r, 0)?,
                        incident: r.get(1)?,
                        runbook: r.get(2)?,
                        phase: parsed(r, 3)?,
                    })
                },
            )
            .optional()?)
    }

    async fn cancel_waiting(&self, run: i64, reason: &str) -> Result<()> {
        self.0.run(
            "UPDATE runs SET state = 'cancelled', reason = ?2, ended_at = ?3 WHERE id = ?1 AND state IN ('queued', 'awaiting_approval')",
            params![run, reason, now()],
        )?;
        Ok(())
    }

    async fn request_cancel(&self, run: i64) -> Result<()> {
        self.0
            .run("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [run])?;
        Ok(())
    }

    async fn status(&self, incident: i64) -> Result<Option<IncidentStatus>> {
        Ok(self
            .0
            .one(
                "SELECT status FROM incidents WHERE id = ?1",
                [incident],
                |r| parsed(r, 0),
            )
            .optional()?)
    }

    async fn set_root_cause(&self, incident: i64, text: &str) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET root_cause = ?2 WHERE id = ?1",
            params![incident, text],
        )?;
        Ok(())
    }

    async fn set_status_by_hand(&self, incident: i64, status: IncidentStatus) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET status = ?2, resolved_at = CASE WHEN ?2 = 'resolved' THEN COALESCE(resolved_at, ?3) ELSE NULL END,
                 alerts_ended_at = CASE WHEN ?2 = 'resolved' THEN alerts_ended_at ELSE NULL END WHERE id = ?1",
            params![incident, status.as_str(), now()],
        )?;
        Ok(())
    }

    async fn notification_insert(&self, n: &Notification, body: &[u8]) -> Result<i64> {
        self.0.run(
            "INSERT INTO notifications (received_at, receiver, group_key, status, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now(), n.receiver, n.group_key, n.status.as_str(), body],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    async fn unmatched_upsert(&self, alert: &Alert, receiver: &str) -> Result<u64> {
        let n = self.0.run(
            "INSERT INTO unmatched_alerts (fingerprint, alertname, labels, receiver, first_seen, last_seen, seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)
             ON CONFLICT (fingerprint) DO UPDATE SET labels = ?3, receiver = ?4, last_seen = ?5, seen = seen + 1",
            params![alert.fingerprint, alert.name(), json(&shortened(&alert.labels)), receiver, now()],
        )?;
        Ok(n as u64)
    }

    async fn unmatched_trim(&self) -> Result<()> {
        self.0.run(
            "DELETE FROM unmatched_alerts WHERE (SELECT COUNT(*) FROM unmatched_alerts) > ?1
             AND fingerprint NOT IN (SELECT fingerprint FROM unmatched_alerts ORDER BY last_seen DESC LIMIT ?1)",
            [UNMATCHED_KEPT],
        )?;
        Ok(())
    }

    async fn open_incident(&self, receiver: &str, group_key: &str) -> Result<Option<OpenIncident>> {
        Ok(self
            .0
            .one(
                "SELECT id, severity, services, runbooks FROM incidents WHERE receiver = ?1 AND group_key = ?2 AND status != 'resolved'",
                params![receiver, group_key],
                |r| {
                    Ok(OpenIncident {
                        id: r.get(0)?,
                        severity: r.get(1)?,
                        services: r.get(2)?,
                        runbooks: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    async fn incident_scope(
        &self,
        incident: i64,
        severity: Severity,
        services: &str,
        runbooks: &str,
    ) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET severity = ?2, services = ?3, runbooks = ?4, updated_at = ?5 WHERE id = ?1",
            params![incident, severity.to_string(), services, runbooks, now()],
        )?;
        Ok(())
    }

    async fn incident_insert(
        &self,
        n: &Notification,
        title: &str,
        severity: Severity,
        services: &str,
        runbooks: &str,
        shadow: bool,
    ) -> Result<Option<i64>> {
        self.0.run(
            "INSERT INTO incidents (receiver, group_key, title, severity, status, services, runbooks, created_at, updated_at, shadow)
             VALUES (?1, ?2, ?3, ?4, 'investigating', ?5, ?6, ?7, ?7, ?8)",
            params![n.receiver, n.group_key, title, severity.to_string(), services, runbooks, now(), shadow],
        )?;
        Ok(Some(self.0.last_insert_rowid()))
    }

    async fn notification_link(&self, notification: i64, incident: i64) -> Result<()> {
        self.0.run(
            "UPDATE notifications SET incident_id = ?2 WHERE id = ?1",
            params![notification, incident],
        )?;
        Ok(())
    }

    async fn alert_status(
        &self,
        incident: i64,
        alert: &Alert,
        starts: &str,
    ) -> Result<Option<Status>> {
        Ok(self
            .0
            .one(
                "SELECT status FROM alerts WHERE incident_id = ?1 AND fingerprint = ?2 AND starts_at = ?3",
                params![incident, alert.fingerprint, starts],
                |r| parsed(r, 0),
            )
            .optional()?)
    }

    async fn alert_upsert(&self, incident: i64, alert: &Alert, starts: &str) -> Result<()> {
        self.0.run(
            "INSERT INTO alerts (incident_id, fingerprint, starts_at, status, ends_at, labels, annotations, generator_url, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (incident_id, fingerprint, starts_at) DO UPDATE SET status = ?4, ends_at = ?5, annotations = ?7, last_seen = ?9",
            params![incident, alert.fingerprint, starts, alert.status.as_str(), alert.ends_at.to_string(), json(&alert.labels), json(&alert.annotations), alert.generator_url, now()],
        )?;
        Ok(())
    }

    async fn run_insert(
        &self,
        incident: i64,
        notification: i64,
        m: &RunbookMatch,
        (fingerprint, starts): (&str, &str),
        phase: Phase,
    ) -> Result<Option<i64>> {
        let inserted = self.0.run(
            "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8
             WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runbook = ?3 AND fingerprint = ?4 AND phase = ?6
                               AND state IN ('queued', 'running', 'awaiting_approval'))
             ON CONFLICT DO NOTHING",
            params![incident, notification, m.name, fingerprint, starts, phase.as_str(), now(), m.idempotent],
        )?;
        Ok((inserted == 1).then(|| self.0.last_insert_rowid()))
    }

    async fn last_queued(
        &self,
        runbook: &str,
        fingerprint: &str,
        not: i64,
        within: Duration,
    ) -> Result<Option<String>> {
        Ok(self
            .0
            .one(
                "SELECT queued_at FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = 'remediation' AND id != ?3
                 AND state != 'skipped' AND queued_at > ?4 ORDER BY id DESC LIMIT 1",
                params![runbook, fingerprint, not, ago(within)],
                |r| r.get(0),
            )
            .optional()?)
    }

    async fn skip_run(&self, run: i64, reason: &str, rate_limited: bool) -> Result<()> {
        self.0.run(
            "UPDATE runs SET state = 'skipped', reason = ?2, ended_at = ?3, rate_limited = ?4 WHERE id = ?1",
            params![run, reason, now(), rate_limited],
        )?;
        Ok(())
    }

    /// One writer: the count holds until the commit.
    async fn started_within(
        &self,
        runbook: Option<&str>,
        rate: crate::duration::Rate,
        not: i64,
    ) -> Result<i64> {
        Ok(self.0.one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE state != 'skipped' AND queued_at > ?1 AND id != ?2
                 AND phase = 'remediation' AND (?3 IS NULL OR runbook = ?3) LIMIT ?4)",
            params![ago(rate.per), not, runbook, rate.n],
            |r| r.get(0),
        )?)
    }

    async fn storming(&self, runbook: &str, not: i64, window: Duration) -> Result<bool> {
        Ok(self.0.one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE rate_limited = 1 AND runbook = ?1 AND id != ?2 AND ended_at > ?3)",
            params![runbook, not, ago(window)],
            |r| r.get(0),
        )?)
    }

    async fn remediations_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
    ) -> Result<Vec<RemediationInProgress>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, incident_id, state FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = 'remediation' AND state IN ('queued', 'running', 'awaiting_approval') ORDER BY id",
            )?
            .query_map(params![runbook, fingerprint], |r| {
                Ok((r.get(0)?, r.get(1)?, parsed(r, 2)?))
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn unresolved_alerts(&self, incident: i64) -> Result<i64> {
        Ok(self.0.one(
            "SELECT COUNT(*) FROM alerts WHERE incident_id = ?1 AND status != 'resolved'",
            [incident],
            |r| r.get(0),
        )?)
    }

    async fn alerts_not_ended(&self, incident: i64) -> Result<Option<DateTime<Utc>>> {
        let (created, known): (String, bool) = self.0.one(
            "SELECT created_at, alerts_ended_at IS NOT NULL FROM incidents WHERE id = ?1",
            [incident],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((!known).then(|| {
            DateTime::parse_from_rfc3339(&created)
                .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc))
        }))
    }

    async fn alert_ends(&self, incident: i64) -> Result<Vec<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT ends_at FROM alerts WHERE incident_id = ?1")?
            .query_map([incident], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn set_alerts_ended(&self, incident: i64, at: Option<DateTime<Utc>>) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET alerts_ended_at = ?2 WHERE id = ?1",
            params![incident, at.map(ts)],
        )?;
        Ok(())
    }

    async fn queued_runs(&self) -> Result<i64> {
        Ok(self.0.one("SELECT n FROM queue_depth", [], |r| r.get(0))?)
    }

    /// One writer: claims are serialized already.
    async fn claim_lock(&self) -> Result<()> {
        Ok(())
    }

    async fn running_per_runbook(&self) -> Result<Vec<(String, u32)>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT runbook, COUNT(*) FROM runs WHERE state = 'running' GROUP BY runbook",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn queued(&self, after: i64, limit: i64, skip: &[String]) -> Result<Vec<(i64, String)>> {
        let skip = serde_json::to_string(skip).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, runbook FROM runs WHERE state = 'queued' AND id > ?1
                   AND runbook NOT IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, limit, skip], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn take(
        &self,
        run: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(ClaimedRun, Taken)>> {
        let t = self
            .0
            .one(
                "UPDATE runs SET state = 'running', started_at = CASE WHEN result IS NULL THEN ?2 ELSE started_at END, owner = ?3, lease_until = ?4, heard_at = ?2, progress = NULL,
                 fence = fence + 1, attempt = attempt + CASE WHEN result IS NULL THEN 1 ELSE 0 END, start_noted = 0
             WHERE id = ?1 AND state = 'queued' RETURNING fence, attempt, result IS NOT NULL",
                params![run, now(), owner, later(lease)],
                |r| {
                    Ok(Taken {
                        fence: r.get(0)?,
                        attempt: r.get(1)?,
                        resumed: r.get(2)?,
                    })
                },
            )
            .optional()?;
        let Some(t) = t else {
            return Ok(None);
        };
        let claimed = self.0.one(
            "SELECT r.incident_id, r.runbook, r.fingerprint, r.starts_at, r.phase, n.body, i.severity, i.shadow, r.rerun_of
         FROM runs r JOIN notifications n ON n.id = r.notification_id JOIN incidents i ON i.id = r.incident_id WHERE r.id = ?1",
            [run],
            |r| {
                Ok(ClaimedRun {
                    incident: r.get(0)?,
                    runbook: r.get(1)?,
                    fingerprint: r.get(2)?,
                    starts_at: r.get(3)?,
                    phase: parsed(r, 4)?,
                    body: r.get(5)?,
                    severity: parsed(r, 6)?,
                    shadow: r.get(7)?,
                    rerun_of: r.get(8)?,
                })
            },
        )?;
        Ok(Some((claimed, t)))
    }

    async fn start_unnoted(
        &self,
        run: i64,
        fence: Option<i64>,
    ) -> Result<Option<(UnnotedStart, RunContext)>> {
        let start = self
            .0
            .one(
                "UPDATE runs SET start_noted = 1 WHERE id = ?1 AND (?2 IS NULL OR fence = ?2) AND NOT start_noted
                 RETURNING incident_id, runbook, phase, fingerprint, notification_id, owner, attempt, result IS NOT NULL",
                params![run, fence],
                |r| {
                    Ok(UnnotedStart {
                        incident: r.get(0)?,
                        runbook: r.get(1)?,
                        phase: parsed(r, 2)?,
                        fingerprint: r.get(3)?,
                        notification: r.get(4)?,
                        owner: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        attempt: r.get(6)?,
                        resumed: r.get(7)?,
                    })
                },
            )
            .optional()?;
        let Some(start) = start else {
            return Ok(None);
        };
        let cx = crate::store::driver::Driver::run_context(self, start.incident).await?;
        Ok(Some((start, cx)))
    }

    async fn summary(&self, incident: i64) -> Result<Option<(IncidentSummary, Option<String>)>> {
        Ok(self
            .0
            .one(
                &format!("SELECT {} FROM incidents i WHERE id = ?1", *SUMMARY_COLUMNS),
                [incident],
                |r| Ok((summary(r)?, r.get("root_cause")?)),
            )
            .optional()?)
    }

    async fn alerts_of(&self, incident: i64) -> Result<Vec<AlertRecord>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url FROM alerts
                 WHERE incident_id = ?1 ORDER BY first_seen, fingerprint",
            )?
            .query_map([incident], |r| {
                Ok(AlertRecord {
                    fingerprint: r.get(0)?,
                    status: parsed(r, 1)?,
                    labels: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                    annotations: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    starts_at: r.get(4)?,
                    ends_at: r.get(5)?,
                    generator_url: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn runs_of(&self, incident: i64) -> Result<Vec<RunRecord>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT id, runbook, fingerprint, starts_at, phase, state, reason, queued_at, started_at, ended_at, result, rerun_of
                 FROM runs WHERE incident_id = ?1 ORDER BY id",
            )?
            .query_map([incident], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    runbook: r.get(1)?,
                    fingerprint: r.get(2)?,
                    starts_at: r.get(3)?,
                    phase: parsed(r, 4)?,
                    state: parsed(r, 5)?,
                    reason: r.get(6)?,
                    queued_at: r.get(7)?,
                    started_at: r.get(8)?,
                    ended_at: r.get(9)?,
                    result: run_detail(r.get::<_, Option<String>>(10)?.as_deref()).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
                    })?,
                    live_output: Vec::new(),
                    rerun_of: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn live_output_of(&self, run: i64) -> Result<Vec<OutputChunk>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT seq, step, stream, chunk, rowid FROM step_output WHERE run_id = ?1 ORDER BY seq",
            )?
            .query_map([run], |r| {
                Ok(OutputChunk {
                    seq: r.get(0)?,
                    cursor: r.get(4)?,
                    step: r.get(1)?,
                    stream: r.get(2)?,
                    text: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(3)?).into_owned(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn timeline_of(&self, incident: i64) -> Result<Vec<TimelineEntry>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT at, author, kind, message, status FROM timeline WHERE incident_id = ?1 ORDER BY id",
            )?
            .query_map([incident], |r| {
                Ok(TimelineEntry {
                    at: r.get(0)?,
                    author: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                    status: r.get::<_, Option<String>>(4)?.and_then(|s| s.parse().ok()),
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn messages_of(&self, incident: i64) -> Result<Vec<MessageRecord>> {
        super::outbox::messages_of(self.0, incident)
    }

    async fn escalations_of(&self, incident: i64) -> Result<Vec<EscalationRecord>> {
        super::outbox::escalations(self.0, incident)
    }

    async fn approvals_of(&self, incident: i64) -> Result<Vec<Approval>> {
        super::approvals::of_incident(self.0, incident)
    }

    async fn record_budget(
        &self,
        incident: i64,
        budget: &str,
        affecting: Option<bool>,
    ) -> Result<bool> {
        Ok(self.0.run(
            "UPDATE incidents SET slo_budget = ?2, slo_affecting = ?3 WHERE id = ?1 AND slo_budget IS NULL",
            params![incident, budget, affecting],
        )? == 1)
    }

    async fn budget_state(&self, service: &str) -> Result<Option<(bool, String)>> {
        Ok(self
            .0
            .prepare_cached("SELECT frozen, notify FROM budget_states WHERE service = ?1")?
            .query_row([service], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    async fn budget_state_put(
        &self,
        service: &str,
        (frozen, reasons, notify): (bool, &str, &str),
        at: DateTime<Utc>,
        expected: Option<bool>,
    ) -> Result<bool> {
        let n = match expected {
            None => self.0.run(
                "INSERT INTO budget_states (service, frozen, reasons, notify, since) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (service) DO NOTHING",
                params![service, frozen, reasons, notify, ts(at)],
            )?,
            Some(was) => self.0.run(
                "UPDATE budget_states SET frozen = ?2, reasons = ?3, notify = ?4, since = ?5 WHERE service = ?1 AND frozen = ?6",
                params![service, frozen, reasons, notify, ts(at), was],
            )?,
        };
        Ok(n == 1)
    }

    async fn service_timeline_insert(
        &self,
        service: &str,
        author: &str,
        kind: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.0.run(
            "INSERT INTO service_timeline (service, at, author, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![service, ts(at), author, kind, message],
        )?;
        Ok(())
    }

    async fn service_timeline_of(&self, service: &str, limit: u32) -> Result<Vec<ServiceEntry>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT at, author, kind, message FROM service_timeline WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![service, limit], |r| {
                let at: String = r.get(0)?;
                Ok(ServiceEntry {
                    at: DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                0,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })?,
                    author: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn overrides_end(&self, service: &str, by: &str, at: DateTime<Utc>) -> Result<u64> {
        Ok(self.0.run(
            "UPDATE gate_overrides SET ended_at = ?3, ended_by = ?2 WHERE service = ?1 AND ended_at IS NULL AND until > ?3",
            params![service, by, ts(at)],
        )? as u64)
    }

    async fn override_insert(&self, o: &GateOverride) -> Result<()> {
        self.0.run(
            "INSERT INTO gate_overrides (service, created_by, reason, created_at, until) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![o.service, o.by, o.reason, ts(o.since), ts(o.until)],
        )?;
        Ok(())
    }

    async fn overrides_open(&self, at: DateTime<Utc>) -> Result<Vec<GateOverride>> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT service, created_by, reason, created_at, until FROM gate_overrides WHERE ended_at IS NULL AND until > ?1 ORDER BY id",
            )?
            .query_map([ts(at)], |r| {
                let time = |i: usize| {
                    let t: String = r.get(i)?;
                    DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                i,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })
                };
                Ok(GateOverride {
                    service: r.get(0)?,
                    by: r.get(1)?,
                    reason: r.get(2)?,
                    since: time(3)?,
                    until: time(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn require_postmortem(&self, incident: i64, reason: &str) -> Result<()> {
        self.0.run(
            "UPDATE incidents SET postmortem_required = ?2 WHERE id = ?1",
            params![incident, reason],
        )?;
        Ok(())
    }

    async fn slo_statuses_clear(&self) -> Result<()> {
        self.0.run("DELETE FROM slo_status", [])?;
        Ok(())
    }

    async fn slo_status_insert(
        &self,
        id: &str,
        status: &str,
        at: DateTime<Utc>,
        took_ms: i64,
    ) -> Result<()> {
        self.0.run(
            "INSERT INTO slo_status (id, status, refreshed_at, took_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, status, ts(at), took_ms],
        )?;
        Ok(())
    }

    async fn claim_drill(
        &self,
        runbook: &str,
        drill: &str,
        at: DateTime<Utc>,
        owner: &str,
    ) -> Result<bool> {
        Ok(self.0.run(
            "INSERT INTO drills (runbook, drill, scheduled_at, owner, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![runbook, drill, ts(at), owner, now()],
        )? == 1)
    }
}

/// A run whose end or pause was recorded, from the `RETURNING` of its update.
fn ended_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndedRun> {
    Ok(EndedRun {
        incident: r.get(0)?,
        runbook: r.get(1)?,
        phase: parsed(r, 2)?,
        notification: r.get(3)?,
        fingerprint: r.get(4)?,
    })
}

/// The columns of a [`RunningRun`], as `running_row` reads them.
const RUNNING_COLUMNS: &str = "id, incident_id, runbook, idempotent, owner, attempt, cancel_requested, fingerprint, phase, progress, started_at, heard_at";

/// A row of [`Driver::running`] or [`Driver::running_run`].
fn running_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunningRun> {
    let time = |t: Option<String>| {
        t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Ok(RunningRun {
        id: r.get(0)?,
        incident: r.get(1)?,
        runbook: r.get(2)?,
        idempotent: r.get(3)?,
        owner: r.get(4)?,
        attempt: r.get(5)?,
        cancel_requested: r.get(6)?,
        fingerprint: r.get(7)?,
        phase: parsed(r, 8)?,
        progress: r.get(9)?,
        started: time(r.get(10)?),
        heard: time(r.get(11)?),
    })
}
