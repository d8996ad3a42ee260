//! The PostgreSQL driver: each method one statement on the operation's
//! transaction. Methods that say they lock take the row `FOR UPDATE`;
//! timers and notifications due are taken `FOR UPDATE SKIP LOCKED`, so
//! each belongs to one replica. An incident is locked before its runs
//! (docs/ha.md).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::approvals::{row as approval_row, COLUMNS as APPROVAL_COLUMNS};
use super::{outbox, summary, SUMMARY_COLUMNS};
use super::{parsed, secs, text, Fail, Op, Tx, CLAIM_LOCK, QUEUED_CHANNEL};
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
    ChecklistRow, ClaimView, ClaimedRun, DueEscalation, EndAndStart, EndedRun, OpenIncident,
    RemediationInProgress, RerunSource, RunContext, RunToCancel, RunningRun, Taken, UnnotedStart,
};
use crate::store::types::{
    budget_item, json, run_detail, shortened, ts, Ticks, CURRENT_REMEDIATION_STATES, LIVE_TAIL,
    UNMATCHED_KEPT,
};
use crate::store::{GateOverride, Lease, RunbookMatch, ServiceEntry, StoreError};

/// [`Driver::run_context`](crate::store::driver::Driver::run_context)'s
/// columns, of incident `i`: its lifecycle, rules and shadow flag, and the
/// states of its current remediation runs (as `CURRENT_REMEDIATION_STATES`),
/// each given by `$state` over `r`: a statement that changes a run reads
/// the snapshot from before its change, and counts that run in its new
/// state instead.
macro_rules! run_context_columns {
    ($state:literal) => {
        concat!(
            "i.status, i.run_failed, i.notify, i.shadow, ",
            remediation_states!($state)
        )
    };
}

/// The states (`$state`, of `r`) of incident `i`'s current remediation
/// runs, as an array.
macro_rules! remediation_states {
    ($state:literal) => {
        concat!(
            "ARRAY(SELECT ", $state, "
                   FROM runs r WHERE r.incident_id = i.id AND r.phase = 'remediation'
                   AND NOT EXISTS (SELECT 1 FROM runs n WHERE n.incident_id = r.incident_id AND n.id > r.id
                                   AND COALESCE(n.rerun_of, n.id) = COALESCE(r.rerun_of, r.id)))"
        )
    };
}

/// The states of a [`remediation_states!`] array.
fn states(row: &tokio_postgres::Row, at: usize) -> Op<Vec<RunState>> {
    row.get::<_, Vec<String>>(at)
        .iter()
        .map(|s| s.parse().map_err(|e| StoreError::Invalid(e).into()))
        .collect()
}

/// A [`RunContext`] from `run_context_columns!`, from column `at` on.
fn run_context(row: &tokio_postgres::Row, at: usize) -> Op<RunContext> {
    Ok(RunContext {
        now: lifecycle::Incident {
            status: parsed(row, at)?,
            run_failed: row.get(at + 1),
        },
        policies: (row.get(at + 2), row.get(at + 3)),
        remediation: states(row, at + 4)?,
    })
}

/// The statements of one operation, on its transaction.
pub(in crate::store) struct Conn<'a, 't>(pub &'a Tx<'t>);

impl crate::store::driver::Driver for Conn<'_, '_> {
    type Fail = Fail;

    async fn timeline(
        &self,
        incident: i64,
        author: &str,
        kind: &str,
        message: &str,
        status: Option<IncidentStatus>,
    ) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO timeline (incident_id, at, author, kind, message, status) VALUES ($1, now(), $2, $3, $4, $5)",
                &[&incident, &author, &kind, &message, &status.map(IncidentStatus::as_str)],
            )
            .await?;
        Ok(())
    }

    async fn touch(&self, incident: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET updated_at = now() WHERE id = $1",
                &[&incident],
            )
            .await?;
        Ok(())
    }

    async fn lifecycle(&self, incident: i64) -> Op<lifecycle::Incident> {
        // A locked row is read as its last writer committed it. (`NO KEY`:
        // rows that reference the incident, its timeline's, can still be
        // inserted meanwhile.)
        let row = self
            .0
            .query_one(
                "SELECT status, run_failed FROM incidents WHERE id = $1 FOR NO KEY UPDATE",
                &[&incident],
            )
            .await?;
        Ok(lifecycle::Incident {
            status: parsed(&row, 0)?,
            run_failed: row.get(1),
        })
    }

    async fn run_context(&self, incident: i64) -> Op<RunContext> {
        let row = self
            .0
            .query_one(
                concat!(
                    "SELECT ",
                    run_context_columns!("r.state"),
                    " FROM incidents i WHERE i.id = $1"
                ),
                &[&incident],
            )
            .await?;
        run_context(&row, 0)
    }

    async fn run_noted(
        &self,
        incident: i64,
        notes: &[(&str, Option<&lifecycle::Transition>)],
    ) -> Op<()> {
        // The entries as columns, in order (the rows are inserted in
        // `ORDER BY`'s order, so their ids keep it); the incident as the
        // transitions leave it, applied in turn: the last one's status,
        // the last `run_failed` one sets, and stamped resolved if one
        // resolves it.
        let (mut authors, mut kinds, mut messages, mut statuses) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (note, change) in notes {
            authors.push("runbookd");
            kinds.push("run");
            messages.push(*note);
            statuses.push(None);
            if let Some(t) = change {
                authors.push(t.author);
                kinds.push("status");
                messages.push(t.message.as_str());
                statuses.push(Some(t.status.as_str()));
            }
        }
        let changes: Vec<_> = notes.iter().filter_map(|(_, c)| *c).collect();
        let status = changes.last().map(|t| t.status.as_str());
        let run_failed = changes.iter().rev().find_map(|t| t.run_failed);
        let resolved = changes.iter().any(|t| t.status == IncidentStatus::Resolved);
        self.0
            .execute(
                "WITH n AS (INSERT INTO timeline (incident_id, at, author, kind, message, status)
                            SELECT $1, now(), e.author, e.kind, e.message, e.status
                            FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[]) WITH ORDINALITY AS e (author, kind, message, status, o)
                            ORDER BY e.o)
                 UPDATE incidents SET status = $6, run_failed = COALESCE($7, run_failed), updated_at = now(),
                     resolved_at = CASE WHEN $8 THEN now() ELSE resolved_at END WHERE id = $1 AND $6::TEXT IS NOT NULL",
                &[&incident, &authors, &kinds, &messages, &statuses, &status, &run_failed, &resolved],
            )
            .await?;
        Ok(())
    }

    async fn set_status(
        &self,
        incident: i64,
        status: IncidentStatus,
        run_failed: Option<bool>,
    ) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET status = $2, run_failed = COALESCE($3, run_failed), updated_at = now(),
                     resolved_at = CASE WHEN $2 = 'resolved' THEN now() ELSE resolved_at END WHERE id = $1",
                &[&incident, &status.as_str(), &run_failed],
            )
            .await?;
        Ok(())
    }

    async fn lock_incident(&self, incident: i64) -> Op<bool> {
        Ok(self
            .0
            .query_opt(
                "SELECT 1 FROM incidents WHERE id = $1 FOR UPDATE",
                &[&incident],
            )
            .await?
            .is_some())
    }

    async fn lock_run_incident(&self, run: i64) -> Op<()> {
        // Sent when first polled: the statements joined after it are
        // executed after it, each with a snapshot taken once the lock is
        // held (READ COMMITTED). `NO KEY`: rows that reference the
        // incident (its timeline's) can still be inserted meanwhile.
        self.0
            .at_once(
                "SELECT 1 FROM incidents WHERE id = (SELECT incident_id FROM runs WHERE id = $1) FOR NO KEY UPDATE",
                run,
            )
            .await
    }

    async fn policies(&self, incident: i64) -> Op<(String, bool)> {
        let row = self
            .0
            .query_one(
                "SELECT notify, shadow FROM incidents WHERE id = $1",
                &[&incident],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    async fn set_policies(&self, incident: i64, json: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET notify = $2 WHERE id = $1",
                &[&incident, &json],
            )
            .await?;
        Ok(())
    }

    async fn outbox_insert(
        &self,
        about: &About,
        q: &Queue,
        state: DeliveryState,
        source: Option<(i64, &str)>,
    ) -> Op<()> {
        let (incident, service) = about.columns();
        self.0
            .execute(
                "INSERT INTO outbox (incident_id, notification_id, fingerprint, notifier, event, runbook, run_id, step, detail, template, state, created_at, next_at, service)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), now(), $12)",
                &[
                    &incident,
                    &source.map(|s| s.0),
                    &source.map(|s| s.1),
                    &q.notifier,
                    &q.event.as_str(),
                    &q.runbook,
                    &q.run_id,
                    &q.step,
                    &text(&q.detail),
                    &q.template,
                    &state.as_str(),
                    &service,
                ],
            )
            .await?;
        Ok(())
    }

    async fn escalation_arm(
        &self,
        incident: i64,
        runbook: &str,
        rule: usize,
        e: &Escalation,
    ) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO escalations (incident_id, runbook, rule, due_at, notify, unless_, message, after_ms, state)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6, $7, $8, 'pending') ON CONFLICT DO NOTHING",
                &[
                    &incident,
                    &runbook,
                    &i32::try_from(rule).unwrap_or(i32::MAX),
                    &secs(e.after),
                    &json(&e.notify),
                    &json(&e.unless),
                    &e.message,
                    &i64::try_from(e.after.as_millis()).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        Ok(())
    }

    async fn escalations_cancel(
        &self,
        incident: i64,
        unless: Option<Unless>,
        runbook: Option<&str>,
        reason: &str,
    ) -> Op<u64> {
        let pattern = unless.map(|u| format!("%\"{}\"%", u.as_str()));
        self.0
            .execute(
                "UPDATE escalations SET state = 'cancelled', ended_at = now(), reason = $3
                 WHERE incident_id = $1 AND state = 'pending' AND ($2::TEXT IS NULL OR unless_ LIKE $2)
                   AND ($4::TEXT IS NULL OR runbook = $4)",
                &[&incident, &pattern, &reason, &runbook],
            )
            .await
    }

    async fn escalations_due(&self) -> Op<Vec<DueEscalation>> {
        self.0
            .query(
                "SELECT e.id, e.incident_id, e.runbook, e.notify, e.unless_, e.message, e.after_ms,
                        i.status, i.acknowledged_at IS NOT NULL, i.shadow,
                        EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = e.incident_id AND r.runbook = e.runbook AND r.phase = 'remediation' AND r.state IN ('succeeded', 'succeeded_with_failures'))
                 FROM escalations e JOIN incidents i ON i.id = e.incident_id
                 WHERE e.state = 'pending' AND e.due_at <= now() ORDER BY e.due_at LIMIT 100 FOR UPDATE OF e, i SKIP LOCKED",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(DueEscalation {
                    id: r.get(0),
                    incident: r.get(1),
                    runbook: r.get(2),
                    notify: r.get(3),
                    unless: r.get(4),
                    message: r.get(5),
                    after_ms: r.get(6),
                    status: parsed(r, 7)?,
                    acknowledged: r.get(8),
                    shadow: r.get(9),
                    succeeded: r.get(10),
                })
            })
            .collect()
    }

    async fn escalation_end(&self, id: i64, state: TimerState, reason: &str) -> Op<bool> {
        Ok(self
            .0
            .execute(
                "UPDATE escalations SET state = $2, ended_at = now(), reason = $3 WHERE id = $1 AND state = 'pending'",
                &[&id, &state.as_str(), &reason],
            )
            .await?
            == 1)
    }

    async fn mark_escalated(&self, incident: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET escalated = TRUE, updated_at = now() WHERE id = $1",
                &[&incident],
            )
            .await?;
        Ok(())
    }

    async fn acknowledgement(&self, incident: i64) -> Op<Option<(bool, bool)>> {
        Ok(self
            .0
            .query_opt(
                "SELECT acknowledged_at IS NOT NULL, commander IS NOT NULL FROM incidents WHERE id = $1 FOR UPDATE",
                &[&incident],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    async fn acknowledge(&self, incident: i64, who: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET acknowledged_at = now(), acknowledged_by = $2, commander = COALESCE(commander, $2), updated_at = now() WHERE id = $1",
                &[&incident, &who],
            )
            .await?;
        Ok(())
    }

    async fn outbox_take(&self, owner: &str, limit: u32, lease: Duration) -> Op<Vec<(i64, u32)>> {
        Ok(self
            .0
            .query(
                "UPDATE outbox SET state = 'sending', owner = $1, lease_until = now() + make_interval(secs => $2), attempts = attempts + 1
                 WHERE id IN (SELECT o.id FROM outbox o WHERE ((o.state = 'pending' AND o.next_at <= now()) OR (o.state = 'sending' AND o.lease_until < now()))
                              AND NOT EXISTS (SELECT 1 FROM outbox p WHERE (p.incident_id = o.incident_id OR (p.incident_id IS NULL AND o.incident_id IS NULL AND p.service = o.service)) AND p.notifier = o.notifier AND p.id < o.id AND p.state IN ('pending', 'sending'))
                              ORDER BY o.next_at LIMIT $3 FOR UPDATE OF o SKIP LOCKED)
                 RETURNING id, attempts",
                &[&owner, &secs(lease), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|t| (t.get(0), u32::try_from(t.get::<_, i32>(1)).unwrap_or(0)))
            .collect())
    }

    async fn outbox_item(&self, id: i64, attempt: u32) -> Op<OutboxItem> {
        let r = self
            .0
            .query_one(
                "SELECT o.notifier, o.event, o.incident_id, i.title, i.severity, i.status, i.services, o.runbook, o.run_id, o.step, o.detail, o.template, o.created_at,
                        n.body, o.fingerprint, o.service
                 FROM outbox o LEFT JOIN incidents i ON i.id = o.incident_id
                 LEFT JOIN notifications n ON n.id = COALESCE(o.notification_id, (SELECT MAX(id) FROM notifications WHERE incident_id = o.incident_id))
                 WHERE o.id = $1",
                &[&id],
            )
            .await?;
        let event: Event = parsed(&r, 1)?;
        let about = About::of(r.get(2), r.get(15));
        let (title, severity, status, services) = match &about {
            About::Incident(_) => (
                r.get(3),
                parsed(&r, 4)?,
                parsed(&r, 5)?,
                serde_json::from_str(r.get(6)).unwrap_or_default(),
            ),
            About::Budget(service) => budget_item(service, event),
        };
        Ok(OutboxItem {
            id,
            attempt,
            notifier: r.get(0),
            event,
            incident: about,
            title,
            severity,
            status,
            services,
            runbook: r.get(7),
            run_id: r.get(8),
            step: r.get(9),
            detail: r.get(10),
            template: r.get(11),
            created_at: r.get::<_, DateTime<Utc>>(12),
            body: r.get(13),
            fingerprint: r.get(14),
        })
    }

    async fn outbox_settle(&self, id: i64, attempt: u32, s: &Settle) -> Op<bool> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let n = match s {
            Settle::Delivered => {
                self.0
                    .execute(
                        "UPDATE outbox SET state = 'delivered', delivered_at = now(), owner = NULL, lease_until = NULL, last_error = NULL
                         WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                        &[&id, &attempt],
                    )
                    .await?
            }
            Settle::Retry { at, error } => {
                self.0
                    .execute(
                        "UPDATE outbox SET state = 'pending', next_at = $3, last_error = $4, owner = NULL, lease_until = NULL
                         WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                        &[&id, &attempt, at, error],
                    )
                    .await?
            }
            Settle::Defer { at } => {
                self.0
                    .execute(
                        "UPDATE outbox SET state = 'pending', next_at = $3, attempts = attempts - 1, owner = NULL, lease_until = NULL
                         WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                        &[&id, &attempt, at],
                    )
                    .await?
            }
            Settle::Dead { error } => {
                self.0
                    .execute(
                        "UPDATE outbox SET state = 'dead', last_error = $3, owner = NULL, lease_until = NULL
                         WHERE id = $1 AND attempts = $2 AND state = 'sending'",
                        &[&id, &attempt, error],
                    )
                    .await?
            }
        };
        Ok(n == 1)
    }

    async fn outbox_state(&self, id: i64) -> Op<Option<DeliveryState>> {
        self.0
            .query_opt("SELECT state FROM outbox WHERE id = $1 FOR UPDATE", &[&id])
            .await?
            .map(|r| parsed(&r, 0))
            .transpose()
    }

    async fn outbox_requeue(&self, id: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE outbox SET state = 'pending', next_at = now(), created_at = now(), attempts = 0 WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }

    async fn approval_insert(
        &self,
        run: i64,
        incident: i64,
        runbook: &str,
        r: &Request,
    ) -> Op<String> {
        let index = i32::try_from(r.index).unwrap_or(i32::MAX);
        let row = self
            .0
            .query_one(
                "INSERT INTO approvals (run_id, incident_id, runbook, step, step_index, prompt, requested_at, deadline, on_timeout, state)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), now() + make_interval(secs => $7), $8, 'pending') RETURNING deadline",
                &[&run, &incident, &runbook, &r.step, &index, &text(&r.plan.prompt), &secs(r.plan.timeout()), &r.plan.on_timeout.as_str()],
            )
            .await?;
        Ok(ts(row.get(0)))
    }

    async fn lock_run(&self, run: i64) -> Op<()> {
        self.0
            .execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&run])
            .await?;
        Ok(())
    }

    async fn requeue_awaiting(&self, run: i64) -> Op<Option<i64>> {
        Ok(self
            .0
            .query_opt(
                "UPDATE runs SET state = 'queued' WHERE id = $1 AND state = 'awaiting_approval' RETURNING incident_id",
                &[&run],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn wake_claimers(&self) -> Op<()> {
        self.0
            .execute("SELECT pg_notify($1, '')", &[&QUEUED_CHANNEL])
            .await?;
        Ok(())
    }

    async fn approval_decide(
        &self,
        run: i64,
        approval: i64,
        decision: Decision,
        who: &str,
        comment: Option<&str>,
    ) -> Op<Option<Approval>> {
        self.0
            .query_opt(
                &format!(
                    "UPDATE approvals SET state = $2, decided_by = $3, decided_at = now(), comment = $4
                     WHERE id = $5 AND run_id = $1 AND id = (SELECT MAX(id) FROM approvals WHERE run_id = $1)
                       AND state = 'pending' AND deadline > now()
                     RETURNING {APPROVAL_COLUMNS}"
                ),
                &[&run, &decision.state().as_str(), &who, &comment, &approval],
            )
            .await?
            .as_ref()
            .map(approval_row)
            .transpose()
    }

    async fn run_state(&self, run: i64) -> Op<Option<RunState>> {
        self.0
            .query_opt("SELECT state FROM runs WHERE id = $1", &[&run])
            .await?
            .map(|r| parsed(&r, 0))
            .transpose()
    }

    async fn run_result(&self, run: i64) -> Op<Option<String>> {
        Ok(self
            .0
            .query_one("SELECT result FROM runs WHERE id = $1", &[&run])
            .await?
            .get(0))
    }

    async fn last_approval(&self, run: i64) -> Op<Option<Approval>> {
        self.0
            .query_opt(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1 ORDER BY id DESC LIMIT 1"
                ),
                &[&run],
            )
            .await?
            .as_ref()
            .map(approval_row)
            .transpose()
    }

    async fn approvals_due(&self) -> Op<Vec<(i64, i64)>> {
        Ok(self
            .0
            .query(
                "SELECT a.id, a.run_id FROM approvals a
                 WHERE a.state = 'pending' AND a.deadline <= now() ORDER BY a.incident_id, a.id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn approval_expire(&self, approval: i64) -> Op<Option<Approval>> {
        self.0
            .query_opt(
                &format!(
                    "UPDATE approvals SET state = 'timed_out', decided_by = 'runbookd', decided_at = now()
                     WHERE id = $1 AND state = 'pending' AND deadline <= now()
                     RETURNING {APPROVAL_COLUMNS}"
                ),
                &[&approval],
            )
            .await?
            .as_ref()
            .map(approval_row)
            .transpose()
    }

    async fn approvals_withdraw(&self, run: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE approvals SET state = 'cancelled', decided_at = now() WHERE run_id = $1 AND state = 'pending'",
                &[&run],
            )
            .await?;
        Ok(())
    }

    async fn ticks(&self, incident: i64) -> Op<Ticks> {
        Ok(self
            .0
            .query(
                "SELECT d.run_id, d.step, d.done_by, d.done_at FROM checklist_done d JOIN runs r ON r.id = d.run_id WHERE r.incident_id = $1",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect())
    }

    async fn checklist_runs(&self, incident: i64) -> Op<Vec<ChecklistRow>> {
        Ok(self
            .0
            .query(
                "SELECT id, runbook, COALESCE(rerun_of, id), result FROM runs WHERE incident_id = $1 ORDER BY id",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    async fn tick_insert(
        &self,
        run: i64,
        step: &str,
        who: &str,
    ) -> Op<crate::timestamp::Timestamp> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO checklist_done (run_id, step, done_by, done_at) VALUES ($1, $2, $3, now()) RETURNING done_at",
                &[&run, &step, &who],
            )
            .await?
            .get(0))
    }

    async fn tick_delete(&self, run: i64, step: &str) -> Op<()> {
        self.0
            .execute(
                "DELETE FROM checklist_done WHERE run_id = $1 AND step = $2",
                &[&run, &step],
            )
            .await?;
        Ok(())
    }

    async fn remediation_states(&self, incident: i64) -> Op<Vec<RunState>> {
        self.0
            .query(CURRENT_REMEDIATION_STATES, &[&incident])
            .await?
            .iter()
            .map(|r| parsed(r, 0))
            .collect()
    }

    async fn command(&self, incident: i64) -> Op<Option<(Option<String>, bool)>> {
        Ok(self
            .0
            .query_opt(
                "SELECT commander, acknowledged_at IS NOT NULL FROM incidents WHERE id = $1 FOR UPDATE",
                &[&incident],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    async fn commander(&self, incident: i64) -> Op<Option<String>> {
        Ok(self
            .0
            .query_one(
                "SELECT commander FROM incidents WHERE id = $1",
                &[&incident],
            )
            .await?
            .get(0))
    }

    async fn set_commander(&self, incident: i64, to: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET commander = $2, updated_at = now() WHERE id = $1",
                &[&incident, &to],
            )
            .await?;
        Ok(())
    }

    async fn rerun_source(&self, run: i64) -> Op<Option<RerunSource>> {
        self.0
            .query_opt(
                "SELECT r.incident_id, r.notification_id, r.runbook, r.fingerprint, r.starts_at, r.phase, r.state,
                        COALESCE(r.rerun_of, r.id), r.idempotent, i.status
                 FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = $1 FOR UPDATE OF i",
                &[&run],
            )
            .await?
            .map(|r| {
                Ok(RerunSource {
                    incident: r.get(0),
                    notification: r.get(1),
                    runbook: r.get(2),
                    fingerprint: r.get(3),
                    starts_at: r.get(4),
                    phase: r.get(5),
                    state: parsed(&r, 6)?,
                    lineage: r.get(7),
                    idempotent: r.get(8),
                    status: parsed(&r, 9)?,
                })
            })
            .transpose()
    }

    async fn run_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
        phase: &str,
    ) -> Op<Option<i64>> {
        Ok(self
            .0
            .query_opt(
                "SELECT id FROM runs WHERE runbook = $1 AND fingerprint = $2 AND phase = $3 AND state IN ('queued', 'running', 'awaiting_approval')",
                &[&runbook, &fingerprint, &phase],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn insert_rerun(&self, s: &RerunSource) -> Op<i64> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent, rerun_of, rerun)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', now(), $7, $8,
                         (SELECT COALESCE(MAX(rerun), 0) + 1 FROM runs WHERE runbook = $3 AND fingerprint = $4 AND starts_at = $5 AND phase = $6))
                 RETURNING id",
                &[&s.incident, &s.notification, &s.runbook, &s.fingerprint, &s.starts_at, &s.phase, &s.idempotent, &s.lineage],
            )
            .await?
            .get(0))
    }

    async fn renew(&self, owner: &str, runs: &[Lease], lease: Duration) -> Op<Vec<(i64, bool)>> {
        let ids: Vec<i64> = runs.iter().map(|l| l.run_id).collect();
        let fences: Vec<i64> = runs.iter().map(|l| l.fence).collect();
        Ok(self
            .0
            .query(
                "UPDATE runs r SET lease_until = clock_timestamp() + make_interval(secs => $3), heard_at = clock_timestamp()
                 FROM unnest($1::int8[], $2::int8[]) AS l(id, fence)
                 WHERE r.id = l.id AND r.fence = l.fence AND r.owner = $4 AND r.state = 'running'
                 RETURNING r.id, r.cancel_requested",
                &[&ids, &fences, &secs(lease), &owner],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// `FOR SHARE`: a takeover or an end recorded meanwhile waits, and never
    /// sees a stale owner's output.
    async fn holds(&self, lease: Lease) -> Op<bool> {
        Ok(self
            .0
            .query_opt(
                "SELECT 1 FROM runs WHERE id = $1 AND fence = $2 AND state = 'running' FOR SHARE",
                &[&lease.run_id, &lease.fence],
            )
            .await?
            .is_some())
    }

    async fn output_insert(&self, run: i64, step: &str, stream: &str, bytes: &[u8]) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO step_output (run_id, step, seq, stream, chunk) VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM step_output WHERE run_id = $1), $3, $4)",
                &[&run, &step, &stream, &bytes],
            )
            .await?;
        Ok(())
    }

    async fn set_progress(&self, lease: Lease, json: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET progress = $3 WHERE id = $1 AND fence = $2 AND state = 'running'",
                &[&lease.run_id, &lease.fence, &json],
            )
            .await?;
        Ok(())
    }

    async fn end_run(
        &self,
        lease: Lease,
        state: RunState,
        result: &str,
        reason: &str,
    ) -> Op<Option<(EndedRun, RunContext)>> {
        let Some(r) = self
            .0
            .query_opt(
                concat!(
                    "WITH e AS (
                         UPDATE runs SET state = $3, ended_at = now(), result = $4, reason = $5, owner = NULL, lease_until = NULL, progress = NULL
                         WHERE id = $1 AND fence = $2 AND state = 'running' RETURNING incident_id, runbook, phase, notification_id, fingerprint)
                     SELECT e.incident_id, e.runbook, e.phase, e.notification_id, e.fingerprint, ",
                    run_context_columns!("CASE WHEN r.id = $1 THEN $3::TEXT ELSE r.state END"),
                    " FROM e JOIN incidents i ON i.id = e.incident_id"
                ),
                &[&lease.run_id, &lease.fence, &state.as_str(), &result, &reason],
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((ended_run(&r)?, run_context(&r, 5)?)))
    }

    async fn end_run_and_start(
        &self,
        lease: Lease,
        state: RunState,
        result: &str,
        reason: &str,
    ) -> Op<EndAndStart> {
        // `o` is the run as this statement's snapshot has it, before the
        // update. Its start's columns (`start_noted`, `owner`, `attempt`,
        // `result`) are current for a row that is still running on this
        // fence: their other writers are a start's noter and a takeover,
        // which hold the incident's lock the caller holds, `take`, which
        // takes only queued runs (a running one is queued again only by a
        // takeover), and an approval's decision, which moves only waiting
        // ones. A concurrent heartbeat, progress or cancellation request
        // touches none of them. The outer query reads the same snapshot: the
        // start's remediation runs have this run running, the end's have
        // it in its new state.
        let Some(r) = self
            .0
            .query_opt(
                concat!(
                    "WITH e AS (
                         UPDATE runs x SET state = $3, ended_at = now(), result = $4, reason = $5, owner = NULL, lease_until = NULL,
                             progress = NULL, start_noted = TRUE
                         FROM runs o WHERE x.id = $1 AND x.fence = $2 AND x.state = 'running' AND o.id = x.id
                         RETURNING x.incident_id, x.runbook, x.phase, x.notification_id, x.fingerprint,
                             NOT o.start_noted AS unnoted, o.owner, o.attempt, o.result IS NOT NULL AS resumed)
                     SELECT e.incident_id, e.runbook, e.phase, e.notification_id, e.fingerprint, ",
                    run_context_columns!("CASE WHEN r.id = $1 THEN $3::TEXT ELSE r.state END"),
                    ", e.unnoted, e.owner, e.attempt, e.resumed, CASE WHEN e.unnoted THEN ",
                    remediation_states!("r.state"),
                    " END FROM e JOIN incidents i ON i.id = e.incident_id"
                ),
                &[&lease.run_id, &lease.fence, &state.as_str(), &result, &reason],
            )
            .await?
        else {
            // Not ended (its fence moved on, or it is not running): its
            // start, if the fence still holds it.
            let start = self.start_unnoted(lease.run_id, Some(lease.fence)).await?;
            return Ok((start, None));
        };
        let end = ended_run(&r)?;
        let cx = run_context(&r, 5)?;
        let start = if r.get(10) {
            let start = UnnotedStart {
                incident: end.incident,
                runbook: end.runbook.clone(),
                phase: end.phase,
                fingerprint: end.fingerprint.clone(),
                notification: end.notification,
                owner: r.get::<_, Option<String>>(11).unwrap_or_default(),
                attempt: u32::try_from(r.get::<_, i32>(12)).unwrap_or(1),
                resumed: r.get(13),
            };
            let at_start = RunContext {
                now: cx.now,
                policies: cx.policies.clone(),
                remediation: states(&r, 14)?,
            };
            Some((start, at_start))
        } else {
            None
        };
        Ok((start, Some((end, cx))))
    }

    async fn await_approval(
        &self,
        lease: Lease,
        result: &str,
        reason: &str,
    ) -> Op<Option<EndedRun>> {
        self.0
            .query_opt(
                "UPDATE runs SET state = 'awaiting_approval', result = $3, reason = $4, owner = NULL, lease_until = NULL, progress = NULL
                 WHERE id = $1 AND fence = $2 AND state = 'running' AND NOT cancel_requested
                 RETURNING incident_id, runbook, phase, notification_id, fingerprint",
                &[&lease.run_id, &lease.fence, &result, &reason],
            )
            .await?
            .as_ref()
            .map(ended_run)
            .transpose()
    }

    async fn prune_output(&self) -> Op<()> {
        self.0
            .execute(
                "DELETE FROM step_output WHERE run_id IN (
                     SELECT s.run_id FROM (SELECT DISTINCT run_id FROM step_output) s JOIN runs r ON r.id = s.run_id
                     WHERE r.state NOT IN ('queued', 'running') AND r.ended_at < now() - make_interval(secs => $1))",
                &[&secs(LIVE_TAIL)],
            )
            .await?;
        Ok(())
    }

    async fn running(&self, expired: bool) -> Op<Vec<RunningRun>> {
        self.0
            .query(
                &format!("SELECT {RUNNING_COLUMNS} FROM runs WHERE state = 'running' AND (NOT $1 OR lease_until < clock_timestamp())
                 ORDER BY incident_id, id"),
                &[&expired],
            )
            .await?
            .iter()
            .map(running_row)
            .collect()
    }

    async fn running_run(&self, run: i64, expired: bool) -> Op<Option<RunningRun>> {
        self.0
            .query_opt(
                &format!("SELECT {RUNNING_COLUMNS} FROM runs WHERE id = $1 AND state = 'running' AND (NOT $2 OR lease_until < clock_timestamp())
                 FOR UPDATE SKIP LOCKED"),
                &[&run, &expired],
            )
            .await?
            .as_ref()
            .map(running_row)
            .transpose()
    }

    async fn run_output(&self, run: i64) -> Op<Vec<(String, String, Vec<u8>)>> {
        Ok(self
            .0
            .query(
                "SELECT step, stream, chunk FROM step_output WHERE run_id = $1 ORDER BY seq",
                &[&run],
            )
            .await?
            .iter()
            .map(|o| (o.get(0), o.get(1), o.get(2)))
            .collect())
    }

    async fn drop_output(&self, run: i64) -> Op<()> {
        self.0
            .execute("DELETE FROM step_output WHERE run_id = $1", &[&run])
            .await?;
        Ok(())
    }

    async fn requeue(&self, run: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET state = 'queued', owner = NULL, lease_until = NULL, progress = NULL, fence = fence + 1 WHERE id = $1",
                &[&run],
            )
            .await?;
        Ok(())
    }

    async fn end_taken(
        &self,
        run: i64,
        state: RunState,
        reason: &str,
        result: Option<&str>,
    ) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET state = $3, reason = $2, ended_at = now(), owner = NULL, lease_until = NULL, progress = NULL,
                     result = COALESCE($4, result), fence = fence + 1 WHERE id = $1",
                &[&run, &reason, &state.as_str(), &result],
            )
            .await?;
        Ok(())
    }

    async fn run_to_cancel(&self, run: i64) -> Op<Option<RunToCancel>> {
        self.0
            .query_opt(
                "SELECT state, incident_id, runbook, phase FROM runs WHERE id = $1 FOR UPDATE",
                &[&run],
            )
            .await?
            .map(|r| {
                Ok(RunToCancel {
                    state: parsed(&r, 0)?,
                    incident: r.get(1),
                    runbook: r.get(2),
                    phase: parsed(&r, 3)?,
                })
            })
            .transpose()
    }

    async fn cancel_waiting(&self, run: i64, reason: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET state = 'cancelled', reason = $2, ended_at = now() WHERE id = $1 AND state IN ('queued', 'awaiting_approval')",
                &[&run, &reason],
            )
            .await?;
        Ok(())
    }

    async fn request_cancel(&self, run: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1",
                &[&run],
            )
            .await?;
        Ok(())
    }

    async fn status(&self, incident: i64) -> Op<Option<IncidentStatus>> {
        self.0
            .query_opt(
                "SELECT status FROM incidents WHERE id = $1 FOR UPDATE",
                &[&incident],
            )
            .await?
            .map(|r| parsed(&r, 0))
            .transpose()
    }

    async fn set_root_cause(&self, incident: i64, text: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET root_cause = $2 WHERE id = $1",
                &[&incident, &text],
            )
            .await?;
        Ok(())
    }

    async fn set_status_by_hand(&self, incident: i64, status: IncidentStatus) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET status = $2,
                     resolved_at = CASE WHEN $2 = 'resolved' THEN COALESCE(resolved_at, now()) ELSE NULL END,
                     alerts_ended_at = CASE WHEN $2 = 'resolved' THEN alerts_ended_at ELSE NULL END WHERE id = $1",
                &[&incident, &status.as_str()],
            )
            .await?;
        Ok(())
    }

    async fn notification_insert(&self, n: &Notification, body: &[u8]) -> Op<i64> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO notifications (received_at, receiver, group_key, status, body) VALUES (now(), $1, $2, $3, $4) RETURNING id",
                &[&n.receiver, &n.group_key, &n.status.as_str(), &body],
            )
            .await?
            .get(0))
    }

    async fn unmatched_upsert(&self, alert: &Alert, receiver: &str) -> Op<u64> {
        self.0
            .execute(
                "INSERT INTO unmatched_alerts (fingerprint, alertname, labels, receiver, first_seen, last_seen, seen) VALUES ($1, $2, $3, $4, now(), now(), 1)
                 ON CONFLICT (fingerprint) DO UPDATE SET labels = $3, receiver = $4, last_seen = now(), seen = unmatched_alerts.seen + 1",
                &[&alert.fingerprint, &alert.name(), &json(&shortened(&alert.labels)), &receiver],
            )
            .await
    }

    async fn unmatched_trim(&self) -> Op<()> {
        self.0
            .execute(
                "DELETE FROM unmatched_alerts WHERE fingerprint IN (SELECT fingerprint FROM unmatched_alerts ORDER BY last_seen DESC OFFSET $1)",
                &[&UNMATCHED_KEPT],
            )
            .await?;
        Ok(())
    }

    async fn open_incident(&self, receiver: &str, group_key: &str) -> Op<Option<OpenIncident>> {
        Ok(self
            .0
            .query_opt(
                "SELECT id, severity, services, runbooks FROM incidents WHERE receiver = $1 AND group_key = $2 AND status <> 'resolved' FOR UPDATE",
                &[&receiver, &group_key],
            )
            .await?
            .map(|r| OpenIncident {
                id: r.get(0),
                severity: r.get(1),
                services: r.get(2),
                runbooks: r.get(3),
            }))
    }

    async fn incident_scope(
        &self,
        incident: i64,
        severity: Severity,
        services: &str,
        runbooks: &str,
    ) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET severity = $2, services = $3, runbooks = $4, updated_at = now() WHERE id = $1",
                &[&incident, &severity.to_string(), &services, &runbooks],
            )
            .await?;
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
    ) -> Op<Option<i64>> {
        Ok(self
            .0
            .query_opt(
                "INSERT INTO incidents (receiver, group_key, title, severity, status, services, runbooks, created_at, updated_at, shadow)
                 VALUES ($1, $2, $3, $4, 'investigating', $5, $6, now(), now(), $7)
                 ON CONFLICT (receiver, group_key) WHERE status <> 'resolved' DO NOTHING RETURNING id",
                &[&n.receiver, &n.group_key, &title, &severity.to_string(), &services, &runbooks, &shadow],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn notification_link(&self, notification: i64, incident: i64) -> Op<()> {
        self.0
            .execute(
                "UPDATE notifications SET incident_id = $2 WHERE id = $1",
                &[&notification, &incident],
            )
            .await?;
        Ok(())
    }

    async fn alert_status(&self, incident: i64, alert: &Alert, starts: &str) -> Op<Option<Status>> {
        self.0
            .query_opt(
                "SELECT status FROM alerts WHERE incident_id = $1 AND fingerprint = $2 AND starts_at = $3",
                &[&incident, &alert.fingerprint, &starts],
            )
            .await?
            .map(|r| parsed(&r, 0))
            .transpose()
    }

    async fn alert_upsert(&self, incident: i64, alert: &Alert, starts: &str) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO alerts (incident_id, fingerprint, starts_at, status, ends_at, labels, annotations, generator_url, first_seen, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now())
                 ON CONFLICT (incident_id, fingerprint, starts_at) DO UPDATE SET status = $4, ends_at = $5, annotations = $7, last_seen = now()",
                &[&incident, &alert.fingerprint, &starts, &alert.status.as_str(), &alert.ends_at.to_string(), &json(&alert.labels), &json(&alert.annotations), &alert.generator_url],
            )
            .await?;
        Ok(())
    }

    async fn run_insert(
        &self,
        incident: i64,
        notification: i64,
        m: &RunbookMatch,
        (fingerprint, starts): (&str, &str),
        phase: Phase,
    ) -> Op<Option<i64>> {
        Ok(self
            .0
            .query_opt(
                "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent)
                 SELECT $1::BIGINT, $2::BIGINT, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, 'queued', now(), $7::BOOLEAN
                 WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runbook = $3 AND fingerprint = $4 AND phase = $6
                                   AND state IN ('queued', 'running', 'awaiting_approval'))
                 ON CONFLICT DO NOTHING RETURNING id",
                &[&incident, &notification, &m.name, &fingerprint, &starts, &phase.as_str(), &m.idempotent],
            )
            .await?
            .map(|r| r.get(0)))
    }

    async fn last_queued(
        &self,
        runbook: &str,
        fingerprint: &str,
        not: i64,
        within: Duration,
    ) -> Op<Option<String>> {
        Ok(self
            .0
            .query_opt(
                "SELECT queued_at FROM runs WHERE runbook = $1 AND fingerprint = $2 AND phase = 'remediation' AND id <> $3
                 AND state <> 'skipped' AND queued_at > now() - make_interval(secs => $4) ORDER BY id DESC LIMIT 1",
                &[&runbook, &fingerprint, &not, &secs(within)],
            )
            .await?
            .map(|r| ts(r.get(0))))
    }

    async fn skip_run(&self, run: i64, reason: &str, rate_limited: bool) -> Op<()> {
        self.0
            .execute(
                "UPDATE runs SET state = 'skipped', reason = $2, ended_at = now(), rate_limited = $3 WHERE id = $1",
                &[&run, &reason, &rate_limited],
            )
            .await?;
        Ok(())
    }

    /// Takes the cap's transaction lock first: replicas ingesting at once
    /// count one after the other.
    async fn started_within(
        &self,
        runbook: Option<&str>,
        rate: crate::duration::Rate,
        not: i64,
    ) -> Op<i64> {
        self.0
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('runbookd-rate:' || COALESCE($1, '')))",
                &[&runbook],
            )
            .await?;
        Ok(self
            .0
            .query_one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE state <> 'skipped' AND phase = 'remediation'
                     AND queued_at > now() - make_interval(secs => $1) AND id <> $2
                     AND ($3::text IS NULL OR runbook = $3) LIMIT $4) c",
                &[&secs(rate.per), &not, &runbook, &i64::from(rate.n)],
            )
            .await?
            .get(0))
    }

    async fn storming(&self, runbook: &str, not: i64, window: Duration) -> Op<bool> {
        Ok(self
            .0
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE rate_limited AND runbook = $1 AND id <> $2
                     AND ended_at > now() - make_interval(secs => $3))",
                &[&runbook, &not, &secs(window)],
            )
            .await?
            .get(0))
    }

    async fn remediations_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
    ) -> Op<Vec<RemediationInProgress>> {
        self.0
            .query(
                "SELECT id, incident_id, state FROM runs WHERE runbook = $1 AND fingerprint = $2 AND phase = 'remediation' AND state IN ('queued', 'running', 'awaiting_approval') ORDER BY id FOR UPDATE",
                &[&runbook, &fingerprint],
            )
            .await?
            .iter()
            .map(|r| Ok((r.get(0), r.get(1), parsed(r, 2)?)))
            .collect()
    }

    async fn unresolved_alerts(&self, incident: i64) -> Op<i64> {
        Ok(self
            .0
            .query_one(
                "SELECT COUNT(*) FROM alerts WHERE incident_id = $1 AND status <> 'resolved'",
                &[&incident],
            )
            .await?
            .get(0))
    }

    async fn alerts_not_ended(&self, incident: i64) -> Op<Option<DateTime<Utc>>> {
        let row = self
            .0
            .query_one(
                "SELECT created_at, alerts_ended_at IS NOT NULL FROM incidents WHERE id = $1",
                &[&incident],
            )
            .await?;
        Ok((!row.get::<_, bool>(1)).then(|| row.get(0)))
    }

    async fn alert_ends(&self, incident: i64) -> Op<Vec<String>> {
        Ok(self
            .0
            .query(
                "SELECT ends_at FROM alerts WHERE incident_id = $1",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn set_alerts_ended(&self, incident: i64, at: Option<DateTime<Utc>>) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET alerts_ended_at = $2 WHERE id = $1",
                &[&incident, &at],
            )
            .await?;
        Ok(())
    }

    async fn queued_runs(&self) -> Op<i64> {
        Ok(self
            .0
            .query_one("SELECT COUNT(*) FROM runs WHERE state = 'queued'", &[])
            .await?
            .get(0))
    }

    async fn claim_lock(&self) -> Op<()> {
        // Sent when first polled, so the statements joined after it are
        // executed after it.
        self.0
            .at_once("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            .await
    }

    async fn running_per_runbook(&self) -> Op<Vec<(String, u32)>> {
        Ok(self
            .0
            .query(
                "SELECT runbook, COUNT(*) FROM runs WHERE state = 'running' GROUP BY runbook",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX),
                )
            })
            .collect())
    }

    async fn queued(&self, after: i64, limit: i64, skip: &[String]) -> Op<Vec<(i64, String)>> {
        Ok(self
            .0
            .query(
                "SELECT id, runbook FROM runs WHERE state = 'queued' AND id > $1 AND runbook <> ALL($3) ORDER BY id LIMIT $2",
                &[&after, &limit, &skip],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn claim_view(&self, limit: i64) -> Op<ClaimView> {
        // The running counts (a NULL id) and the queue's first page, in one
        // snapshot.
        let rows = self
            .0
            .query(
                "SELECT NULL::BIGINT, runbook, COUNT(*) FROM runs WHERE state = 'running' GROUP BY runbook
                 UNION ALL
                 (SELECT id, runbook, 0 FROM runs WHERE state = 'queued' ORDER BY id LIMIT $1)",
                &[&limit],
            )
            .await?;
        let (mut per_runbook, mut queued) = (Vec::new(), Vec::new());
        for r in &rows {
            match r.get::<_, Option<i64>>(0) {
                Some(id) => queued.push((id, r.get(1))),
                None => per_runbook.push((
                    r.get(1),
                    u32::try_from(r.get::<_, i64>(2)).unwrap_or(u32::MAX),
                )),
            }
        }
        queued.sort_unstable_by_key(|(id, _)| *id);
        Ok((per_runbook, queued))
    }

    async fn take(
        &self,
        run: i64,
        owner: &str,
        lease: Duration,
    ) -> Op<Option<(ClaimedRun, Taken)>> {
        // The run's own columns come from the update (a CTE's outer query
        // reads the snapshot from before it); take changes none of them.
        let Some(r) = self
            .0
            .query_opt(
                "WITH t AS (
                     UPDATE runs SET state = 'running', started_at = CASE WHEN result IS NULL THEN now() ELSE started_at END, owner = $2,
                         lease_until = clock_timestamp() + make_interval(secs => $3), heard_at = clock_timestamp(), progress = NULL,
                         fence = fence + 1, attempt = attempt + CASE WHEN result IS NULL THEN 1 ELSE 0 END, start_noted = FALSE
                     WHERE id = $1 AND state = 'queued'
                     RETURNING fence, attempt, result IS NOT NULL AS resumed, incident_id, runbook, fingerprint, starts_at, phase,
                         notification_id, rerun_of)
                 SELECT t.fence, t.attempt, t.resumed, t.incident_id, t.runbook, t.fingerprint, t.starts_at, t.phase, n.body,
                     i.severity, i.shadow, t.rerun_of
                 FROM t JOIN notifications n ON n.id = t.notification_id JOIN incidents i ON i.id = t.incident_id",
                &[&run, &owner, &secs(lease)],
            )
            .await?
        else {
            return Ok(None);
        };
        let taken = Taken {
            fence: r.get(0),
            attempt: u32::try_from(r.get::<_, i32>(1)).unwrap_or(1),
            resumed: r.get(2),
        };
        let claimed = ClaimedRun {
            incident: r.get(3),
            runbook: r.get(4),
            fingerprint: r.get(5),
            starts_at: r.get(6),
            phase: parsed(&r, 7)?,
            body: r.get(8),
            severity: parsed(&r, 9)?,
            shadow: r.get(10),
            rerun_of: r.get(11),
        };
        Ok(Some((claimed, taken)))
    }

    async fn start_unnoted(
        &self,
        run: i64,
        fence: Option<i64>,
    ) -> Op<Option<(UnnotedStart, RunContext)>> {
        // A concurrent noter's update is waited for, and its row read
        // again: of two, one finds the start noted.
        let Some(r) = self
            .0
            .query_opt(
                concat!(
                    "WITH s AS (
                         UPDATE runs SET start_noted = TRUE
                         WHERE id = $1 AND ($2::BIGINT IS NULL OR fence = $2) AND NOT start_noted
                         RETURNING incident_id, runbook, phase, fingerprint, notification_id, owner, attempt, result IS NOT NULL)
                     SELECT s.*, ",
                    run_context_columns!("r.state"),
                    " FROM s JOIN incidents i ON i.id = s.incident_id"
                ),
                &[&run, &fence],
            )
            .await?
        else {
            return Ok(None);
        };
        let start = UnnotedStart {
            incident: r.get(0),
            runbook: r.get(1),
            phase: parsed(&r, 2)?,
            fingerprint: r.get(3),
            notification: r.get(4),
            owner: r.get::<_, Option<String>>(5).unwrap_or_default(),
            attempt: u32::try_from(r.get::<_, i32>(6)).unwrap_or(1),
            resumed: r.get(7),
        };
        Ok(Some((start, run_context(&r, 8)?)))
    }

    async fn summary(&self, incident: i64) -> Op<Option<(IncidentSummary, Option<String>)>> {
        self.0
            .query_opt(
                &format!("SELECT {} FROM incidents i WHERE id = $1", *SUMMARY_COLUMNS),
                &[&incident],
            )
            .await?
            .map(|r| Ok((summary(&r)?, r.try_get("root_cause")?)))
            .transpose()
    }

    async fn alerts_of(&self, incident: i64) -> Op<Vec<AlertRecord>> {
        self
            .0
            .query(
                "SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url FROM alerts
                 WHERE incident_id = $1 ORDER BY first_seen, fingerprint",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(AlertRecord {
                    fingerprint: r.get(0),
                    status: parsed(r, 1)?,
                    labels: serde_json::from_str(r.get(2)).unwrap_or_default(),
                    annotations: serde_json::from_str(r.get(3)).unwrap_or_default(),
                    starts_at: r.get(4),
                    ends_at: r.get(5),
                    generator_url: r.get(6),
                })
            })
            .collect::<Op<_>>()
    }

    async fn runs_of(&self, incident: i64) -> Op<Vec<RunRecord>> {
        self.0
            .query(
                "SELECT id, runbook, fingerprint, starts_at, phase, state, reason, queued_at, started_at, ended_at, result, rerun_of
                 FROM runs WHERE incident_id = $1 ORDER BY id",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(RunRecord {
                    id: r.get(0),
                    runbook: r.get(1),
                    fingerprint: r.get(2),
                    starts_at: r.get(3),
                    phase: parsed(r, 4)?,
                    state: parsed(r, 5)?,
                    reason: r.get(6),
                    queued_at: crate::timestamp::Timestamp(r.get(7)),
                    started_at: r.get::<_, Option<DateTime<Utc>>>(8).map(crate::timestamp::Timestamp),
                    ended_at: r.get::<_, Option<DateTime<Utc>>>(9).map(crate::timestamp::Timestamp),
                    result: run_detail(r.get(10)).map_err(StoreError::Invalid)?,
                    live_output: Vec::new(),
                    rerun_of: r.get(11),
                })
            })
            .collect()
    }

    async fn live_output_of(&self, run: i64) -> Op<Vec<OutputChunk>> {
        Ok(self
            .0
            .query(
                "SELECT seq, step, stream, chunk, id FROM step_output WHERE run_id = $1 ORDER BY seq",
                &[&run],
            )
            .await?
            .iter()
            .map(|r| OutputChunk {
                seq: i64::from(r.get::<_, i32>(0)),
                cursor: r.get(4),
                step: r.get(1),
                stream: r.get(2),
                text: String::from_utf8_lossy(r.get(3)).into_owned(),
            })
            .collect())
    }

    async fn timeline_of(&self, incident: i64) -> Op<Vec<TimelineEntry>> {
        Ok(self
            .0
            .query(
                "SELECT at, author, kind, message, status FROM timeline WHERE incident_id = $1 ORDER BY id",
                &[&incident],
            )
            .await?
            .iter()
            .map(|r| TimelineEntry {
                at: crate::timestamp::Timestamp(r.get(0)),
                author: r.get(1),
                kind: r.get(2),
                message: r.get(3),
                status: r.get::<_, Option<&str>>(4).and_then(|s| s.parse().ok()),
            })
            .collect())
    }

    async fn messages_of(&self, incident: i64) -> Op<Vec<MessageRecord>> {
        outbox::messages_of(self.0.client(), incident).await
    }

    async fn escalations_of(&self, incident: i64) -> Op<Vec<EscalationRecord>> {
        outbox::escalations_of(self.0.client(), incident).await
    }

    async fn approvals_of(&self, incident: i64) -> Op<Vec<Approval>> {
        super::approvals::of_incident(self.0.client(), incident).await
    }

    async fn record_budget(
        &self,
        incident: i64,
        budget: &str,
        affecting: Option<bool>,
    ) -> Op<bool> {
        Ok(self
            .0
            .execute(
                "UPDATE incidents SET slo_budget = $2, slo_affecting = $3 WHERE id = $1 AND slo_budget IS NULL",
                &[&incident, &budget, &affecting],
            )
            .await?
            == 1)
    }

    async fn budget_state(&self, service: &str) -> Op<Option<(bool, String)>> {
        Ok(self
            .0
            .query_opt(
                "SELECT frozen, notify FROM budget_states WHERE service = $1 FOR UPDATE",
                &[&service],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    async fn budget_state_put(
        &self,
        service: &str,
        (frozen, reasons, notify): (bool, &str, &str),
        at: DateTime<Utc>,
        expected: Option<bool>,
    ) -> Op<bool> {
        let n = match expected {
            None => {
                self.0
                    .execute(
                        "INSERT INTO budget_states (service, frozen, reasons, notify, since) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (service) DO NOTHING",
                        &[&service, &frozen, &reasons, &notify, &at],
                    )
                    .await?
            }
            Some(was) => {
                self.0
                    .execute(
                        "UPDATE budget_states SET frozen = $2, reasons = $3, notify = $4, since = $5 WHERE service = $1 AND frozen = $6",
                        &[&service, &frozen, &reasons, &notify, &at, &was],
                    )
                    .await?
            }
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
    ) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO service_timeline (service, at, author, kind, message) VALUES ($1, $2, $3, $4, $5)",
                &[&service, &at, &author, &kind, &message],
            )
            .await?;
        Ok(())
    }

    async fn service_timeline_of(&self, service: &str, limit: u32) -> Op<Vec<ServiceEntry>> {
        Ok(self
            .0
            .query(
                "SELECT at, author, kind, message FROM service_timeline WHERE service = $1 ORDER BY id DESC LIMIT $2",
                &[&service, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| ServiceEntry {
                at: r.get(0),
                author: r.get(1),
                kind: r.get(2),
                message: r.get(3),
            })
            .collect())
    }

    async fn overrides_end(&self, service: &str, by: &str, at: DateTime<Utc>) -> Op<u64> {
        self.0
            .execute(
                "UPDATE gate_overrides SET ended_at = $3, ended_by = $2 WHERE service = $1 AND ended_at IS NULL AND until > $3",
                &[&service, &by, &at],
            )
            .await
    }

    async fn override_insert(&self, o: &GateOverride) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO gate_overrides (service, created_by, reason, created_at, until) VALUES ($1, $2, $3, $4, $5)",
                &[&o.service, &o.by, &o.reason, &o.since, &o.until],
            )
            .await?;
        Ok(())
    }

    async fn overrides_open(&self, at: DateTime<Utc>) -> Op<Vec<GateOverride>> {
        Ok(self
            .0
            .query(
                "SELECT service, created_by, reason, created_at, until FROM gate_overrides WHERE ended_at IS NULL AND until > $1 ORDER BY id",
                &[&at],
            )
            .await?
            .iter()
            .map(|r| GateOverride {
                service: r.get(0),
                by: r.get(1),
                reason: r.get(2),
                since: r.get(3),
                until: r.get(4),
            })
            .collect())
    }

    async fn require_postmortem(&self, incident: i64, reason: &str) -> Op<()> {
        self.0
            .execute(
                "UPDATE incidents SET postmortem_required = $2 WHERE id = $1",
                &[&incident, &reason],
            )
            .await?;
        Ok(())
    }

    async fn slo_statuses_clear(&self) -> Op<()> {
        self.0.execute("DELETE FROM slo_status", &[]).await?;
        Ok(())
    }

    async fn slo_status_insert(
        &self,
        id: &str,
        status: &str,
        at: DateTime<Utc>,
        took_ms: i64,
    ) -> Op<()> {
        self.0
            .execute(
                "INSERT INTO slo_status (id, status, refreshed_at, took_ms) VALUES ($1, $2, $3, $4)",
                &[&id, &status, &at, &took_ms],
            )
            .await?;
        Ok(())
    }

    async fn claim_drill(
        &self,
        runbook: &str,
        drill: &str,
        at: DateTime<Utc>,
        owner: &str,
    ) -> Op<bool> {
        Ok(self
            .0
            .execute(
                "INSERT INTO drills (runbook, drill, scheduled_at, owner, claimed_at) VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING",
                &[&runbook, &drill, &at, &owner],
            )
            .await?
            == 1)
    }
}

/// A run whose end or pause was recorded, from the `RETURNING` of its update.
fn ended_run(r: &tokio_postgres::Row) -> Op<EndedRun> {
    Ok(EndedRun {
        incident: r.get(0),
        runbook: r.get(1),
        phase: parsed(r, 2)?,
        notification: r.get(3),
        fingerprint: r.get(4),
    })
}

/// The columns of a [`RunningRun`], as `running_row` reads them.
const RUNNING_COLUMNS: &str = "id, incident_id, runbook, idempotent, owner, attempt, cancel_requested, fingerprint, phase, progress, started_at, heard_at";

/// A row of [`Driver::running`] or [`Driver::running_run`].
fn running_row(r: &tokio_postgres::Row) -> Op<RunningRun> {
    Ok(RunningRun {
        id: r.get(0),
        incident: r.get(1),
        runbook: r.get(2),
        idempotent: r.get(3),
        owner: r.get(4),
        attempt: u32::try_from(r.get::<_, i32>(5)).unwrap_or(1),
        cancel_requested: r.get(6),
        fingerprint: r.get(7),
        phase: parsed(r, 8)?,
        progress: r.get(9),
        started: r.get(10),
        heard: r.get(11),
    })
}
