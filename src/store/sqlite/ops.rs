//! The SQLite backend's operations: each write runs inside one savepoint of
//! a group transaction, each query on a read connection.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::driver::{at_once, Conn};
use super::{parsed, Cached, Sqlite};
use crate::alert::Status;
use crate::incident::{
    AlertRecord, IncidentDetail, IncidentId, IncidentStatus, IncidentSummary, OutputChunk,
    RunRecord, RunState, TimelineEntry, Update, SUBJECT_LABELS,
};
use crate::lifecycle;
use crate::plan::Phase;
use crate::runbook::Severity;
use crate::store::driver::Driver;
use crate::store::flow;
use crate::store::types::{
    incident_filter, json, now, run_detail, say, services, shortened, ts, UNMATCHED_KEPT,
};
use crate::store::{
    ClaimRequest, Claimed, FinishOutcome, Finished, Heartbeat, IncidentFilter, Ingest, Ingested,
    Lease, LiveChunk, Pending, Reap, Reaped, Result, RunbookMatch, Stats, StoreError,
    UnmatchedAlert,
};

pub(super) fn timeline(
    conn: &Connection,
    incident: i64,
    author: &str,
    kind: &str,
    message: &str,
    status: Option<IncidentStatus>,
) -> Result<()> {
    at_once(Conn(conn).timeline(incident, author, kind, message, status))
}

/// A run's entry on its incident's timeline, by runbookd.
pub(super) fn run_note(conn: &Connection, incident: i64, message: &str) -> Result<()> {
    at_once(flow::incidents::run_note(&Conn(conn), incident, message))
}

/// Records what the lifecycle decides for an event of `incident`.
pub(super) fn advance(conn: &Connection, incident: i64, event: lifecycle::Event<'_>) -> Result<()> {
    at_once(flow::incidents::advance(&Conn(conn), incident, event))
}

/// The columns of an incident summary: the incident's own, its alert counts
/// and what its first alert is about (at most 128 characters of the first of
/// [`SUBJECT_LABELS`] it has), so a list never loads whole label sets.
static SUMMARY_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let subject: Vec<String> = SUBJECT_LABELS
        .iter()
        .map(|l| format!("json_extract(labels, '$.{l}')"))
        .collect();
    format!(
        "i.*, (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id) AS alert_count,
         (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id AND a.status = 'firing') AS firing_count,
         (SELECT COUNT(*) FROM runs r WHERE r.incident_id = i.id AND r.state = 'awaiting_approval') AS awaiting_approval,
         (SELECT substr(COALESCE({}), 1, 128) FROM alerts a WHERE a.incident_id = i.id ORDER BY first_seen, fingerprint LIMIT 1) AS subject",
        subject.join(", ")
    )
});

/// Records a notification, opens or updates its incident, and queues runs.
///
/// # Errors
/// [`StoreError::QueueFull`] (nothing recorded), or a database error.
fn ingest(conn: &Connection, input: &Ingest) -> Result<Ingested> {
    let n = &input.notification;
    let at = now();
    conn.run(
        "INSERT INTO notifications (received_at, receiver, group_key, status, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, n.receiver, n.group_key, n.status.as_str(), input.body],
    )?;
    let mut out = Ingested {
        notification_id: conn.last_insert_rowid(),
        ..Ingested::default()
    };
    // Firing alerts no runbook matched: kept (bounded, one row per alert) so
    // that authors see what their runbooks miss. Notifications whose alerts
    // all matched pay nothing for it.
    let mut unmatched = 0;
    for (alert, m) in n.alerts.iter().zip(&input.matches) {
        if alert.status == Status::Firing && m.is_empty() {
            unmatched += conn.run(
                "INSERT INTO unmatched_alerts (fingerprint, alertname, labels, receiver, first_seen, last_seen, seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)
                 ON CONFLICT (fingerprint) DO UPDATE SET labels = ?3, receiver = ?4, last_seen = ?5, seen = seen + 1",
                params![alert.fingerprint, alert.name(), json(&shortened(&alert.labels)), n.receiver, at],
            )?;
        }
    }
    if unmatched > 0 {
        conn.run(
            "DELETE FROM unmatched_alerts WHERE (SELECT COUNT(*) FROM unmatched_alerts) > ?1
             AND fingerprint NOT IN (SELECT fingerprint FROM unmatched_alerts ORDER BY last_seen DESC LIMIT ?1)",
            [UNMATCHED_KEPT],
        )?;
    }
    let matched: Vec<&RunbookMatch> = input.matches.iter().flatten().collect();
    if matched.is_empty() {
        return Ok(out);
    }
    let worst = matched
        .iter()
        .map(|m| m.severity)
        .min()
        .unwrap_or(Severity::Sev4);
    let open: Option<(i64, String, String, String)> = conn
        .one(
            "SELECT id, severity, services, runbooks FROM incidents WHERE receiver = ?1 AND group_key = ?2 AND status != 'resolved'",
            params![n.receiver, n.group_key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let firing_matched = n
        .alerts
        .iter()
        .zip(&input.matches)
        .any(|(a, m)| a.status == Status::Firing && !m.is_empty());
    let names: BTreeSet<String> = matched.iter().map(|m| m.name.clone()).collect();
    let mut opened = false;
    let incident = match open {
        Some((id, severity, svc, rbs)) => {
            let severity = severity.parse::<Severity>().map_or(worst, |s| s.min(worst));
            let mut svc: BTreeSet<String> = serde_json::from_str(&svc).unwrap_or_default();
            svc.extend(services(n));
            let mut rbs: BTreeSet<String> = serde_json::from_str(&rbs).unwrap_or_default();
            rbs.extend(names);
            conn.run(
                "UPDATE incidents SET severity = ?2, services = ?3, runbooks = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, severity.to_string(), json(&svc), json(&rbs), at],
            )?;
            id
        }
        // Only a firing alert opens an incident; a resolution of an unknown group is recorded, nothing more.
        None if !firing_matched => return Ok(out),
        None => {
            let title = matched
                .first()
                .map_or_else(String::new, |m| m.title.clone());
            conn.run(
                "INSERT INTO incidents (receiver, group_key, title, severity, status, services, runbooks, created_at, updated_at, shadow)
                 VALUES (?1, ?2, ?3, ?4, 'investigating', ?5, ?6, ?7, ?7, ?8)",
                params![n.receiver, n.group_key, title, worst.to_string(), json(&services(n)), json(&names), at, input.shadow],
            )?;
            let id = conn.last_insert_rowid();
            timeline(
                conn,
                id,
                "runbookd",
                "status",
                &say::opened(n),
                Some(IncidentStatus::Investigating),
            )?;
            opened = true;
            id
        }
    };
    out.incident = Some(IncidentId(incident));
    notify_ingest(conn, input, incident, opened, out.notification_id)?;
    conn.run(
        "UPDATE notifications SET incident_id = ?2 WHERE id = ?1",
        params![out.notification_id, incident],
    )?;

    for (alert, matches) in n.alerts.iter().zip(&input.matches) {
        let starts = alert.starts_at.to_string();
        let known: Option<String> = conn
            .one("SELECT status FROM alerts WHERE incident_id = ?1 AND fingerprint = ?2 AND starts_at = ?3", params![incident, alert.fingerprint, starts], |r| r.get(0))
            .optional()?;
        conn.run(
            "INSERT INTO alerts (incident_id, fingerprint, starts_at, status, ends_at, labels, annotations, generator_url, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT (incident_id, fingerprint, starts_at) DO UPDATE SET status = ?4, ends_at = ?5, annotations = ?7, last_seen = ?9",
            params![incident, alert.fingerprint, starts, alert.status.as_str(), alert.ends_at.to_string(), json(&alert.labels), json(&alert.annotations), alert.generator_url, at],
        )?;
        if known.as_deref() != Some(alert.status.as_str()) {
            timeline(
                conn,
                incident,
                say::alert_author(&n.receiver),
                "alert",
                &say::alert(alert),
                None,
            )?;
        }
        for m in matches {
            match alert.status {
                Status::Firing => queue_remediation(
                    conn,
                    &mut out,
                    incident,
                    alert,
                    (m, input.run_rate),
                    &starts,
                )?,
                Status::Resolved => {
                    if m.has_on_resolved {
                        if let Some(id) = insert_run(
                            conn,
                            incident,
                            out.notification_id,
                            m,
                            &alert.fingerprint,
                            &starts,
                            Phase::Resolution,
                        )? {
                            out.queued.push(id);
                        } else {
                            out.duplicates += 1;
                        }
                    }
                    if m.cancel_on_resolved {
                        let mut stmt = conn.prepare(
                            "SELECT id, state FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = 'remediation' AND state IN ('queued', 'running', 'awaiting_approval')",
                        )?;
                        let runs: Vec<(i64, String)> = stmt
                            .query_map(params![m.name, alert.fingerprint], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })?
                            .collect::<rusqlite::Result<_>>()?;
                        for (id, state) in runs {
                            if state == "queued" || state == "awaiting_approval" {
                                let why = if state == "queued" {
                                    say::CANCELLED_BEFORE_START
                                } else {
                                    say::CANCELLED_WAITING
                                };
                                conn.run("UPDATE runs SET state = 'cancelled', reason = ?2, ended_at = ?3 WHERE id = ?1", params![id, why, now()])?;
                                at_once(Conn(conn).approvals_withdraw(id))?;
                                out.withdrawn.push(id);
                            } else {
                                conn.run(
                                    "UPDATE runs SET cancel_requested = 1 WHERE id = ?1",
                                    [id],
                                )?;
                                out.cancel.push(id);
                            }
                            run_note(conn, incident, &say::cancelled_resolved(id, &m.name))?;
                        }
                    }
                }
            }
        }
    }
    let unresolved: i64 = conn.one(
        "SELECT COUNT(*) FROM alerts WHERE incident_id = ?1 AND status != 'resolved'",
        [incident],
        |r| r.get(0),
    )?;
    if unresolved == 0 {
        advance(conn, incident, lifecycle::Event::AllAlertsResolved)?;
        // When the alerts really ended, the first time they all did: the
        // shared rule (the latest endsAt, clamped to [opened, now]).
        let (created, known): (String, bool) = conn.one(
            "SELECT created_at, alerts_ended_at IS NOT NULL FROM incidents WHERE id = ?1",
            [incident],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if !known {
            let ends: Vec<String> = conn
                .prepare_cached("SELECT ends_at FROM alerts WHERE incident_id = ?1")?
                .query_map([incident], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let opened = DateTime::parse_from_rfc3339(&created)
                .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc));
            let ended =
                crate::store::types::alerts_ended_at(ends.iter().map(String::as_str), opened);
            conn.run(
                "UPDATE incidents SET alerts_ended_at = ?2 WHERE id = ?1",
                params![incident, ended.map(crate::store::types::ts)],
            )?;
        }
    }
    // Only what queues a run is refused (whole) over the cap: a
    // notification that queues none, a resolution above all, is always
    // recorded (as on PostgreSQL).
    if !out.queued.is_empty() {
        let queued: i64 = conn.one("SELECT n FROM queue_depth", [], |r| r.get(0))?;
        if u64::try_from(queued).unwrap_or(0) > input.max_queued {
            return Err(StoreError::QueueFull);
        }
    }
    Ok(out)
}

/// Remembers the matched runbooks' notification rules on the incident,
/// tells people it opened, and arms the escalation timers of the runbooks
/// matching its firing alerts.
fn notify_ingest(
    conn: &Connection,
    input: &Ingest,
    incident: i64,
    opened: bool,
    notification: i64,
) -> Result<()> {
    let n = &input.notification;
    let add = crate::store::types::firing_policies(input);
    if add.is_empty() {
        return Ok(());
    }
    at_once(flow::outbox::remember(&Conn(conn), incident, &add))?;
    if opened {
        let fingerprint = n.alerts.first().map_or("", |a| a.fingerprint.as_str());
        at_once(flow::outbox::enqueue(
            &Conn(conn),
            incident,
            &crate::notify::Happened {
                event: crate::notify::Event::IncidentOpened,
                runbook: None,
                run_id: None,
                step: None,
                detail: format!("{} {}", IncidentId(incident), say::opened(n)),
            },
            Some((notification, fingerprint)),
        ))?;
    }
    for (name, policy) in &add {
        if !policy.escalation.is_empty() {
            at_once(flow::outbox::arm(&Conn(conn), incident, name, policy))?;
        }
    }
    Ok(())
}

/// Queues a run unless its key is known, or a run of the same runbook, alert
/// and phase is still in progress (Alertmanager's `startsAt` can drift
/// between peers and resends: that is the same alert, not a new one).
fn insert_run(
    conn: &Connection,
    incident: i64,
    notification: i64,
    m: &RunbookMatch,
    fingerprint: &str,
    starts: &str,
    phase: Phase,
) -> Result<Option<i64>> {
    let in_progress: bool = conn.one(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = ?3 AND state IN ('queued', 'running', 'awaiting_approval'))",
        params![m.name, fingerprint, phase.as_str()],
        |r| r.get(0),
    )?;
    if in_progress {
        return Ok(None);
    }
    let inserted = conn.run(
        "INSERT INTO runs (incident_id, notification_id, runbook, fingerprint, starts_at, phase, state, queued_at, idempotent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8) ON CONFLICT DO NOTHING",
        params![incident, notification, m.name, fingerprint, starts, phase.as_str(), now(), m.idempotent],
    )?;
    Ok((inserted == 1).then(|| conn.last_insert_rowid()))
}

fn queue_remediation(
    conn: &Connection,
    out: &mut Ingested,
    incident: i64,
    alert: &crate::alert::Alert,
    (m, run_rate): (&RunbookMatch, Option<crate::duration::Rate>),
    starts: &str,
) -> Result<()> {
    let Some(id) = insert_run(
        conn,
        incident,
        out.notification_id,
        m,
        &alert.fingerprint,
        starts,
        Phase::Remediation,
    )?
    else {
        out.duplicates += 1;
        return Ok(());
    };
    if !m.cooldown.is_zero() {
        let since = ts(Utc::now() - chrono::Duration::from_std(m.cooldown).unwrap_or_default());
        let recent: Option<String> = conn
            .one(
                "SELECT queued_at FROM runs WHERE runbook = ?1 AND fingerprint = ?2 AND phase = 'remediation' AND id != ?3
                 AND state != 'skipped' AND queued_at > ?4 ORDER BY id DESC LIMIT 1",
                params![m.name, alert.fingerprint, id, since],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(last) = recent {
            let reason = say::cooldown(&m.name, &last, m.cooldown);
            conn.run(
                "UPDATE runs SET state = 'skipped', reason = ?2, ended_at = ?3 WHERE id = ?1",
                params![id, reason, now()],
            )?;
            run_note(conn, incident, &say::skipped(id, &reason))?;
            out.skipped += 1;
            return Ok(());
        }
    }
    if let Some(reason) = over_rate(conn, id, m, run_rate)? {
        conn.run(
            "UPDATE runs SET state = 'skipped', reason = ?2, ended_at = ?3, rate_limited = 1 WHERE id = ?1",
            params![id, reason, now()],
        )?;
        run_note(conn, incident, &say::skipped(id, &reason))?;
        out.skipped += 1;
        // The storm's first skipped run tells people; the others do not.
        let since =
            ts(Utc::now()
                - chrono::Duration::from_std(storm_window(m, run_rate)).unwrap_or_default());
        let storming: bool = conn.one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE rate_limited = 1 AND runbook = ?1 AND id != ?2 AND ended_at > ?3)",
            params![m.name, id, since],
            |r| r.get(0),
        )?;
        if !storming {
            run_note(conn, incident, &say::storm(&reason))?;
            at_once(flow::outbox::enqueue(
                &Conn(conn),
                incident,
                &crate::notify::Happened {
                    event: crate::notify::Event::RunsRateLimited,
                    runbook: Some(&m.name),
                    run_id: Some(id),
                    step: None,
                    detail: say::storm(&reason),
                },
                Some((out.notification_id, &alert.fingerprint)),
            ))?;
        }
        return Ok(());
    }
    out.queued.push(id);
    Ok(())
}

/// The window a storm of `m`'s runs is told once in: the longer of the caps.
fn storm_window(m: &RunbookMatch, run_rate: Option<crate::duration::Rate>) -> Duration {
    m.rate
        .map(|r| r.per)
        .max(run_rate.map(|r| r.per))
        .unwrap_or_default()
}

/// Why run `id` of `m` is over a rate cap (the runbook's `rate`, then the
/// server's), if it is: as many runs started within the window already.
fn over_rate(
    conn: &Connection,
    id: i64,
    m: &RunbookMatch,
    run_rate: Option<crate::duration::Rate>,
) -> Result<Option<String>> {
    let started = |runbook: Option<&str>, rate: crate::duration::Rate| -> Result<bool> {
        let since = ts(Utc::now() - chrono::Duration::from_std(rate.per).unwrap_or_default());
        let n: i64 = conn.one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE state != 'skipped' AND queued_at > ?1 AND id != ?2
                 AND phase = 'remediation' AND (?3 IS NULL OR runbook = ?3) LIMIT ?4)",
            params![since, id, runbook, rate.n],
            |r| r.get(0),
        )?;
        Ok(n >= i64::from(rate.n))
    };
    if let Some(rate) = m.rate {
        if started(Some(&m.name), rate)? {
            return Ok(Some(say::rate_limited(&m.name, rate, false)));
        }
    }
    if let Some(rate) = run_rate {
        if started(None, rate)? {
            return Ok(Some(say::rate_limited(&m.name, rate, true)));
        }
    }
    Ok(None)
}

fn lease_until(lease: Duration) -> String {
    ts(Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default())
}

/// Claims the oldest queued runs whose runbooks are under their
/// concurrency, as many as the caps leave room for, in one transaction.
///
/// # Errors
/// A database error.
fn claim(conn: &Connection, req: &ClaimRequest) -> Result<Vec<Claimed>> {
    let running: i64 = conn.one(
        "SELECT COUNT(*) FROM runs WHERE state = 'running'",
        [],
        |r| r.get(0),
    )?;
    let mut free = (i64::from(req.cluster_max) - running).min(i64::from(req.free));
    if free <= 0 {
        return Ok(Vec::new());
    }
    let mut per_runbook: HashMap<String, u32> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT runbook, COUNT(*) FROM runs WHERE state = 'running' GROUP BY runbook",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))? {
            let (rb, n) = row?;
            per_runbook.insert(rb, n);
        }
    }
    let candidates: Vec<(i64, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, runbook FROM runs WHERE state = 'queued' ORDER BY id LIMIT ?1",
        )?;
        // A page well past the free slots, for runbooks already at their concurrency.
        let rows = stmt
            .query_map([free * 16 + 64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        rows
    };
    let mut claimed = Vec::new();
    for (id, runbook) in candidates {
        if free == 0 {
            break;
        }
        let n = per_runbook.entry(runbook.clone()).or_default();
        if *n >= req.concurrency.get(&runbook).copied().unwrap_or(1) {
            continue;
        }
        if let Some(c) = claim_one(conn, id, req)? {
            *n += 1;
            free -= 1;
            claimed.push(c);
        }
    }
    Ok(claimed)
}

/// A claimed run's row: incident, runbook, fingerprint, startsAt, phase,
/// notification body, severity, notification id, shadow, `rerun_of`.
type ClaimedRow = (
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    i64,
    bool,
    Option<i64>,
);

fn claim_one(conn: &Connection, id: i64, req: &ClaimRequest) -> Result<Option<Claimed>> {
    let taken: Option<(i64, u32, bool)> = conn
        .one(
            // A run resuming after an approval (it has its steps so far)
            // keeps its start and attempt.
            "UPDATE runs SET state = 'running', started_at = CASE WHEN result IS NULL THEN ?2 ELSE started_at END, owner = ?3, lease_until = ?4, heard_at = ?2, progress = NULL,
                 fence = fence + 1, attempt = attempt + CASE WHEN result IS NULL THEN 1 ELSE 0 END
             WHERE id = ?1 AND state = 'queued' RETURNING fence, attempt, result IS NOT NULL",
            params![id, now(), req.owner, lease_until(req.lease)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((fence, attempt, paused)) = taken else {
        return Ok(None);
    };
    let (incident, runbook, fingerprint, starts_at, phase, body, severity, notification, shadow, rerun_of): ClaimedRow = conn.one(
        "SELECT r.incident_id, r.runbook, r.fingerprint, r.starts_at, r.phase, n.body, i.severity, r.notification_id, i.shadow, r.rerun_of
         FROM runs r JOIN notifications n ON n.id = r.notification_id JOIN incidents i ON i.id = r.incident_id WHERE r.id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?)),
    )?;
    let phase: Phase = phase.parse().map_err(StoreError::Invalid)?;
    let resume = if paused {
        at_once(flow::approvals::resume(&Conn(conn), id))?
    } else {
        None
    };
    if let Some(r) = &resume {
        run_note(
            conn,
            incident,
            &say::resumed(id, &runbook, &r.approval, &req.owner),
        )?;
    } else {
        let started = say::started(id, &runbook, phase, &fingerprint, &req.owner, attempt);
        run_note(conn, incident, &started)?;
        at_once(flow::outbox::enqueue(
            &Conn(conn),
            incident,
            &crate::notify::Happened {
                event: crate::notify::Event::RunStarted,
                runbook: Some(&runbook),
                run_id: Some(id),
                step: None,
                detail: started,
            },
            Some((notification, &fingerprint)),
        ))?;
    }
    advance(
        conn,
        incident,
        lifecycle::Event::RunStarted {
            runbook: &runbook,
            phase,
            failed_runs: at_once(flow::people::tally(&Conn(conn), incident))?.failed,
        },
    )?;
    Ok(Some(Claimed {
        lease: Lease { run_id: id, fence },
        attempt,
        incident: IncidentId(incident),
        severity: severity.parse().map_err(StoreError::Invalid)?,
        runbook,
        fingerprint,
        starts_at,
        phase,
        body,
        shadow,
        resume,
        rerun_of,
    }))
}

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentSummary> {
    let created: String = r.get("created_at")?;
    let resolved: Option<String> = r.get("resolved_at")?;
    let end = resolved
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let start = DateTime::parse_from_rfc3339(&created)
        .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc));
    Ok(IncidentSummary {
        id: IncidentId(r.get("id")?),
        title: r.get("title")?,
        severity: r.get("severity")?,
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
        drill: r.get::<_, String>("receiver")? == crate::drill::DRILL_RECEIVER,
        created_at: created,
        updated_at: r.get("updated_at")?,
        resolved_at: resolved,
        recovered_seconds: r
            .get::<_, Option<String>>("alerts_ended_at")?
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (t.with_timezone(&Utc) - start).num_seconds().max(0)),
        alerts_ended_at: r.get("alerts_ended_at")?,
        alert_count: r.get("alert_count")?,
        firing_count: r.get("firing_count")?,
        subject: r.get("subject")?,
        duration_seconds: (end - start).num_seconds(),
        acknowledged_at: r.get("acknowledged_at")?,
        acknowledged_by: r.get("acknowledged_by")?,
        commander: r.get("commander")?,
        awaiting_approval: r.get("awaiting_approval")?,
        grouped_by: crate::incident::grouped_by(&r.get::<_, String>("group_key")?),
        slo_affecting: crate::store::types::slo_affecting(
            r.get("slo_affecting")?,
            &r.get::<_, String>("severity")?,
        ),
        slo_budget: r.get("slo_budget")?,
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
        self.read(move |conn| {
            let (summary, root_cause) = conn
                .one(&format!("SELECT {} FROM incidents i WHERE id = ?1", *SUMMARY_COLUMNS), [id.0], |r| Ok((summary(r)?, r.get::<_, Option<String>>("root_cause")?)))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let mut stmt = conn.prepare("SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url FROM alerts WHERE incident_id = ?1 ORDER BY first_seen, fingerprint")?;
            let alerts = stmt
                .query_map([id.0], |r| {
                    Ok(AlertRecord {
                        fingerprint: r.get(0)?,
                        status: r.get(1)?,
                        labels: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                        annotations: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                        starts_at: r.get(4)?,
                        ends_at: r.get(5)?,
                        generator_url: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = conn.prepare("SELECT id, runbook, fingerprint, starts_at, phase, state, reason, queued_at, started_at, ended_at, result, rerun_of FROM runs WHERE incident_id = ?1 ORDER BY id")?;
            let mut runs = stmt
                .query_map([id.0], |r| {
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
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = conn.prepare("SELECT seq, step, stream, chunk, rowid FROM step_output WHERE run_id = ?1 ORDER BY seq")?;
            for run in runs.iter_mut().filter(|r| r.state == RunState::Running) {
                run.live_output = out
                    .query_map([run.id], |r| Ok(OutputChunk { seq: r.get(0)?, cursor: r.get(4)?, step: r.get(1)?, stream: r.get(2)?, text: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(3)?).into_owned() }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
            }
            let mut stmt = conn.prepare("SELECT at, author, kind, message, status FROM timeline WHERE incident_id = ?1 ORDER BY id")?;
            let timeline = stmt
                .query_map([id.0], |r| {
                    Ok(TimelineEntry { at: r.get(0)?, author: r.get(1)?, kind: r.get(2)?, message: r.get(3)?, status: r.get::<_, Option<String>>(4)?.and_then(|s| s.parse().ok()) })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let ticks = super::people::ticks(conn, id.0)?;
            let checklist = crate::store::types::checklist(
                &runs.iter().map(crate::store::types::ChecklistRun::of).collect::<Vec<_>>(),
                &ticks,
            );
            let notifications = super::outbox::messages_of(conn, id.0)?;
            let escalations = super::outbox::escalations(conn, id.0)?;
            let approvals = super::approvals::of_incident(conn, id.0)?;
            Ok(IncidentDetail { summary, root_cause, alerts, runs, timeline, checklist, notifications, escalations, approvals })
        })
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
    /// Firing alerts no runbook matched, most recently seen first.
    ///
    /// # Errors
    /// A database error.
    /// Replaces the shared SLO statuses: `(id, JSON)`, read at `at` in
    /// `took_ms`.
    #[must_use]
    pub fn put_slo_statuses(
        &self,
        rows: Vec<(String, String)>,
        at: DateTime<Utc>,
        took_ms: i64,
    ) -> Pending<()> {
        Box::pin(self.write(move |c| {
            c.run("DELETE FROM slo_status", [])?;
            let at = crate::store::types::ts(at);
            for (id, status) in &rows {
                c.run(
                    "INSERT INTO slo_status (id, status, refreshed_at, took_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![id, status, at, took_ms],
                )?;
            }
            Ok(())
        }))
    }

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

    /// Records what an incident cost its services' SLOs, once: `false`
    /// when it was already recorded (by this or another replica).
    #[must_use]
    pub fn record_slo_budget(
        &self,
        id: IncidentId,
        budget: String,
        affecting: Option<bool>,
        note: Option<String>,
    ) -> Pending<bool> {
        Box::pin(self.write(move |c| {
            let n = c.run(
                "UPDATE incidents SET slo_budget = ?2, slo_affecting = ?3 WHERE id = ?1 AND slo_budget IS NULL",
                params![id.0, budget, affecting],
            )?;
            if n == 1 {
                if let Some(note) = note {
                    timeline(c, id.0, "runbookd", "slo", &note, None)?;
                }
            }
            Ok(n == 1)
        }))
    }

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
    #[must_use]
    pub fn ingest(&self, input: Ingest) -> Pending<Ingested> {
        Box::pin(self.write(move |c| ingest(c, &input)))
    }

    #[must_use]
    pub fn claim(&self, req: ClaimRequest) -> Pending<Vec<Claimed>> {
        Box::pin(self.write(move |c| claim(c, &req)))
    }

    #[must_use]
    pub fn heartbeat(
        &self,
        owner: String,
        runs: Vec<Lease>,
        lease: Duration,
    ) -> Pending<Heartbeat> {
        Box::pin(
            self.write(move |c| at_once(flow::runs::heartbeat(&Conn(c), &owner, &runs, lease))),
        )
    }

    pub fn append_output(
        &self,
        lease: Lease,
        chunks: Vec<(String, &'static str, Vec<u8>)>,
    ) -> Pending<()> {
        Box::pin(self.write(move |c| at_once(flow::runs::append_output(&Conn(c), lease, &chunks))))
    }

    #[must_use]
    pub fn finish(&self, f: std::sync::Arc<Finished>) -> Pending<FinishOutcome> {
        Box::pin(self.write(move |c| at_once(flow::runs::finish(&Conn(c), &f))))
    }

    #[must_use]
    pub fn progress(&self, lease: Lease, json: String) -> Pending<()> {
        Box::pin(self.write(move |c| at_once(flow::runs::progress(&Conn(c), lease, &json))))
    }

    #[must_use]
    pub fn reap(&self, scope: Reap) -> Pending<Reaped> {
        Box::pin(self.write(move |c| at_once(flow::runs::reap(&Conn(c), &scope))))
    }

    /// One process holds the store: it leads.
    #[allow(clippy::unused_self)]
    #[must_use]
    pub fn lead(&self, _owner: String, _lease: Duration) -> Pending<bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    #[must_use]
    pub fn add_update(&self, id: IncidentId, u: Update) -> Pending<()> {
        Box::pin(self.write(move |c| at_once(flow::incidents::add_update(&Conn(c), id, &u))))
    }

    #[must_use]
    pub fn claim_drill(
        &self,
        runbook: String,
        drill: String,
        at: DateTime<Utc>,
        owner: String,
    ) -> Pending<bool> {
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "INSERT INTO drills (runbook, drill, scheduled_at, owner, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![runbook, drill, ts(at), owner, now()],
            )?;
            Ok(n == 1)
        }))
    }

    #[must_use]
    pub fn cancel_run(&self, id: i64, who: String) -> Pending<RunState> {
        Box::pin(self.write(move |c| at_once(flow::runs::cancel(&Conn(c), id, &who))))
    }

    pub async fn ping(&self) -> Result<()> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())?)
        })
        .await
    }
}
