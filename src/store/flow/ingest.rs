//! Accepting an Alertmanager notification: recorded, its incident opened
//! or updated, its alerts kept, and its runs queued exactly once per run
//! key (across replicas, the incident's row and the run keys decide), with
//! cooldowns, rate caps and `cancel_on_resolved`.

use std::collections::BTreeSet;

use futures_util::future::try_join;

use super::{incidents::advance, incidents::run_note, outbox, Driver, Op};
use crate::alert::{Alert, Status};
use crate::incident::notices::Happened;
use crate::incident::{IncidentId, IncidentStatus, RunState};
use crate::lifecycle;
use crate::plan::Phase;
use crate::runbook::notify::Event;
use crate::runbook::Severity;
use crate::store::types::{alerts_ended_at, firing_policies, json, say, services};
use crate::store::{Ingest, Ingested, RunbookMatch, StoreError};

/// Records a notification, opens or updates its incident, and queues runs.
///
/// # Errors
/// [`StoreError::QueueFull`] when it would queue runs past the cap
/// (nothing is recorded then), or the driver's failure.
pub(in crate::store) async fn ingest<D: Driver>(d: &D, input: &Ingest) -> Op<Ingested, D::Fail> {
    let n = &input.notification;
    let mut out = Ingested {
        notification_id: d.notification_insert(n, &input.body).await?,
        ..Ingested::default()
    };
    // Firing alerts no runbook matched: kept (bounded, one row per alert) so
    // that authors see what their runbooks miss. Notifications whose alerts
    // all matched pay nothing for it.
    let mut unmatched = 0;
    for (alert, m) in n.alerts.iter().zip(&input.matches) {
        if alert.status == Status::Firing && m.is_empty() {
            unmatched += d.unmatched_upsert(alert, &n.receiver).await?;
        }
    }
    if unmatched > 0 {
        d.unmatched_trim().await?;
    }
    let matched: Vec<&RunbookMatch> = input.matches.iter().flatten().collect();
    if matched.is_empty() {
        return Ok(out);
    }
    let Some((incident, opened)) = incident_of(d, input, &matched).await? else {
        // Only a firing alert opens an incident; a resolution of an
        // unknown group is recorded, nothing more.
        return Ok(out);
    };
    out.incident = Some(IncidentId(incident));
    notify_ingest(d, input, incident, opened, out.notification_id).await?;
    d.notification_link(out.notification_id, incident).await?;
    for (alert, matches) in n.alerts.iter().zip(&input.matches) {
        let starts = alert.starts_at.to_string();
        // The status before the upsert (sent together, run in order).
        let (known, ()) = try_join(
            d.alert_status(incident, alert, &starts),
            d.alert_upsert(incident, alert, &starts),
        )
        .await?;
        if known != Some(alert.status) {
            let author = say::alert_author(&n.receiver);
            d.timeline(incident, author, "alert", &say::alert(alert), None)
                .await?;
        }
        for m in matches {
            match alert.status {
                Status::Firing => {
                    queue_remediation(d, &mut out, incident, alert, (m, input.run_rate), &starts)
                        .await?;
                }
                Status::Resolved => {
                    resolved(d, &mut out, incident, alert, m, &starts).await?;
                }
            }
        }
    }
    if d.unresolved_alerts(incident).await? == 0 {
        advance(d, incident, lifecycle::Event::AllAlertsResolved).await?;
        // When the alerts really ended, the first time they all did: the
        // shared rule (the latest endsAt, clamped to [opened, now]).
        if let Some(opened) = d.alerts_not_ended(incident).await? {
            let ends = d.alert_ends(incident).await?;
            let ended = alerts_ended_at(ends.iter().map(String::as_str), opened);
            d.set_alerts_ended(incident, ended).await?;
        }
    }
    if let Some(note) = &input.note {
        super::incidents::add_update(d, IncidentId(incident), note).await?;
    }
    // Only what queues a run is refused (whole) over the cap: a
    // notification that queues none, a resolution above all, is always
    // recorded.
    if !out.queued.is_empty() {
        if u64::try_from(d.queued_runs().await?).unwrap_or(0) > input.max_queued {
            return Err(StoreError::QueueFull.into());
        }
        d.wake_claimers().await?;
    }
    Ok(out)
}

/// The open incident of the notification's group, updated with its
/// severity, services and runbooks, or a new one when a matched alert
/// fires; whether it was opened now. Two replicas opening the same group's
/// incident at once: whoever loses the unique index merges into the
/// winner's.
async fn incident_of<D: Driver>(
    d: &D,
    input: &Ingest,
    matched: &[&RunbookMatch],
) -> Op<Option<(i64, bool)>, D::Fail> {
    let n = &input.notification;
    let worst = matched
        .iter()
        .map(|m| m.severity)
        .min()
        .unwrap_or(Severity::Sev4);
    let firing_matched = n
        .alerts
        .iter()
        .zip(&input.matches)
        .any(|(a, m)| a.status == Status::Firing && !m.is_empty());
    let names: BTreeSet<String> = matched.iter().map(|m| m.name.clone()).collect();
    loop {
        if let Some(open) = d.open_incident(&n.receiver, &n.group_key).await? {
            let severity = open
                .severity
                .parse::<Severity>()
                .map_or(worst, |s| s.min(worst));
            let mut svc: BTreeSet<String> =
                serde_json::from_str(&open.services).unwrap_or_default();
            svc.extend(services(n));
            let mut rbs: BTreeSet<String> =
                serde_json::from_str(&open.runbooks).unwrap_or_default();
            rbs.extend(names.iter().cloned());
            d.incident_scope(open.id, severity, &json(&svc), &json(&rbs))
                .await?;
            return Ok(Some((open.id, false)));
        }
        if !firing_matched {
            return Ok(None);
        }
        let title = matched.first().map_or("", |m| m.title.as_str());
        let opened = d
            .incident_insert(
                n,
                title,
                worst,
                &json(&services(n)),
                &json(&names),
                input.shadow,
            )
            .await?;
        if let Some(id) = opened {
            d.timeline(
                id,
                "runbookd",
                "status",
                &say::opened(n),
                Some(IncidentStatus::Investigating),
            )
            .await?;
            return Ok(Some((id, true)));
        }
    }
}

/// Remembers the matched runbooks' notification rules on the incident,
/// tells people it opened, and arms the escalation timers of the runbooks
/// matching its firing alerts.
async fn notify_ingest<D: Driver>(
    d: &D,
    input: &Ingest,
    incident: i64,
    opened: bool,
    notification: i64,
) -> Op<(), D::Fail> {
    let n = &input.notification;
    let add = firing_policies(input);
    if add.is_empty() {
        return Ok(());
    }
    outbox::remember(d, incident, &add).await?;
    if opened {
        let fingerprint = n.alerts.first().map_or("", |a| a.fingerprint.as_str());
        let what = Happened {
            event: Event::IncidentOpened,
            runbook: None,
            run_id: None,
            step: None,
            detail: format!("{} {}", IncidentId(incident), say::opened(n)),
        };
        outbox::enqueue(d, incident, &what, Some((notification, fingerprint))).await?;
    }
    for (name, policy) in &add {
        if !policy.escalation.is_empty() {
            outbox::arm(d, incident, name, policy).await?;
        }
    }
    Ok(())
}

/// Queues a run unless its key is known, or a run of the same runbook, alert
/// and phase is still in progress (Alertmanager's `startsAt` can drift
/// between peers and resends: that is the same alert, not a new one). One
/// statement: the driver inserts only when neither holds.
async fn insert_run<D: Driver>(
    d: &D,
    incident: i64,
    notification: i64,
    m: &RunbookMatch,
    key: (&str, &str),
    phase: Phase,
) -> Op<Option<i64>, D::Fail> {
    d.run_insert(incident, notification, m, key, phase).await
}

async fn queue_remediation<D: Driver>(
    d: &D,
    out: &mut Ingested,
    incident: i64,
    alert: &Alert,
    (m, run_rate): (&RunbookMatch, Option<crate::duration::Rate>),
    starts: &str,
) -> Op<(), D::Fail> {
    let key = (alert.fingerprint.as_str(), starts);
    let notification = out.notification_id;
    let Some(id) = insert_run(d, incident, notification, m, key, Phase::Remediation).await? else {
        out.duplicates += 1;
        return Ok(());
    };
    if !m.cooldown.is_zero() {
        if let Some(last) = d
            .last_queued(&m.name, &alert.fingerprint, id, m.cooldown)
            .await?
        {
            let reason = say::cooldown(&m.name, &last, m.cooldown);
            d.skip_run(id, &reason, false).await?;
            run_note(d, incident, &say::skipped(id, &reason)).await?;
            out.skipped += 1;
            return Ok(());
        }
    }
    let Some(reason) = over_rate(d, id, m, run_rate).await? else {
        out.queued.push(id);
        return Ok(());
    };
    d.skip_run(id, &reason, true).await?;
    run_note(d, incident, &say::skipped(id, &reason)).await?;
    out.skipped += 1;
    // The storm's first skipped run tells people; the others do not.
    let window = m
        .rate
        .map(|r| r.per)
        .max(run_rate.map(|r| r.per))
        .unwrap_or_default();
    if !d.storming(&m.name, id, window).await? {
        run_note(d, incident, &say::storm(&reason)).await?;
        let what = Happened {
            event: Event::RunsRateLimited,
            runbook: Some(&m.name),
            run_id: Some(id),
            step: None,
            detail: say::storm(&reason),
        };
        outbox::enqueue(d, incident, &what, Some((notification, &alert.fingerprint))).await?;
    }
    Ok(())
}

/// Why run `id` of `m` is over a rate cap (the runbook's `rate`, then the
/// server's), if it is: as many runs started within the window already.
/// The driver holds each cap's count to the end of the transaction, so
/// that replicas ingesting at once cannot both take the last place.
async fn over_rate<D: Driver>(
    d: &D,
    id: i64,
    m: &RunbookMatch,
    run_rate: Option<crate::duration::Rate>,
) -> Op<Option<String>, D::Fail> {
    let caps = [
        (Some(m.name.as_str()), m.rate, false),
        (None, run_rate, true),
    ];
    for (runbook, rate, server) in caps {
        let Some(rate) = rate else { continue };
        if d.started_within(runbook, rate, id).await? >= i64::from(rate.n) {
            return Ok(Some(say::rate_limited(&m.name, rate, server)));
        }
    }
    Ok(None)
}

/// A matched alert resolved: its `on_resolved` run is queued, and with
/// `cancel_on_resolved` its remediation runs stop (queued or waiting ones
/// end now, running ones are asked to stop).
async fn resolved<D: Driver>(
    d: &D,
    out: &mut Ingested,
    incident: i64,
    alert: &Alert,
    m: &RunbookMatch,
    starts: &str,
) -> Op<(), D::Fail> {
    if m.has_on_resolved {
        let key = (alert.fingerprint.as_str(), starts);
        match insert_run(d, incident, out.notification_id, m, key, Phase::Resolution).await? {
            Some(id) => out.queued.push(id),
            None => out.duplicates += 1,
        }
    }
    if !m.cancel_on_resolved {
        return Ok(());
    }
    for (id, of, state) in d
        .remediations_in_progress(&m.name, &alert.fingerprint)
        .await?
    {
        match state {
            RunState::Queued | RunState::AwaitingApproval => {
                let why = if state == RunState::Queued {
                    say::CANCELLED_BEFORE_START
                } else {
                    say::CANCELLED_WAITING
                };
                d.cancel_waiting(id, why).await?;
                d.approvals_withdraw(id).await?;
                out.withdrawn.push(id);
            }
            _ => {
                // Its start first, if its owner has not noted it yet (see
                // `runs::cancel`): on this incident only, whose lock this
                // ingest holds. (The same alert's run can belong to another
                // receiver's incident: its lock would be taken after its
                // run's, against the order every writer keeps.)
                if of == incident {
                    super::runs::note_start(d, id, None).await?;
                }
                d.request_cancel(id).await?;
                out.cancel.push(id);
            }
        }
        run_note(d, incident, &say::cancelled_resolved(id, &m.name)).await?;
    }
    Ok(())
}
