//! What goes in and out of the store, whichever backend keeps it, and the
//! wording both backends record.

pub use crate::record::Lease;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::alert::{Alert, Notification};
use crate::incident::{IncidentId, RunState};
use crate::plan::Phase;
use crate::runbook::Severity;

/// What a matching runbook contributes to ingesting a notification.
#[derive(Debug, Clone)]
pub struct RunbookMatch {
    pub name: String,
    pub title: String,
    pub severity: Severity,
    pub cooldown: Duration,
    /// The runbook's `rate`: more runs of it per window are skipped.
    pub rate: Option<crate::duration::Rate>,
    pub has_on_resolved: bool,
    pub cancel_on_resolved: bool,
    /// The runbook says its steps may run again: a run taken over from a
    /// replica that died is queued again instead of ending `interrupted`.
    pub idempotent: bool,
    /// Its `communication:` and `escalation:`.
    pub policy: crate::runbook::notify::Policy,
}

/// A notification to record, with the runbooks matching each of its alerts.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub body: Vec<u8>,
    pub notification: Notification,
    /// Per alert, in payload order.
    pub matches: Vec<Vec<RunbookMatch>>,
    /// Refuse (roll back) when more runs than this would be queued.
    pub max_queued: u64,
    /// Recorded in shadow mode: the incident is marked so.
    pub shadow: bool,
    /// The server's cap on runs of all runbooks per window (`limits.run_rate`);
    /// `None` for runs people asked for.
    pub run_rate: Option<crate::duration::Rate>,
    /// A note for the incident's timeline, recorded with the rest (who
    /// asked for a manual run, or which drill this is).
    pub note: Option<crate::incident::Update>,
}

/// What ingesting did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ingested {
    pub notification_id: i64,
    pub incident: Option<IncidentId>,
    /// Runs queued by this notification.
    pub queued: Vec<i64>,
    /// Runs already known (a resend or retry of the same notification, from
    /// any Alertmanager peer, or a run of the same runbook and alert still in
    /// progress).
    pub duplicates: usize,
    /// Runs skipped because of the runbook's cooldown or a rate cap.
    pub skipped: usize,
    /// Running runs whose cancellation was requested (their alert resolved,
    /// `cancel_on_resolved`); whichever replica runs them stops them.
    #[serde(skip)]
    pub cancel: Vec<i64>,
    /// Runs cancelled before they (re)started (their alert resolved,
    /// `cancel_on_resolved`): one that had paused for approval will not run
    /// again, so the silences it made are expired now.
    #[serde(skip)]
    pub withdrawn: Vec<i64>,
}

/// What a replica may claim now.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// This replica's name (recorded as the runs' owner).
    pub owner: String,
    /// Each runbook's `concurrency` (across all replicas).
    pub concurrency: HashMap<String, u32>,
    /// Runs this replica may start now (its own cap minus what it runs).
    pub free: u32,
    /// Runs all replicas together may run at once.
    pub cluster_max: u32,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
}

/// A run taken from the queue to execute.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    /// 1 for the first execution; more when an idempotent run was taken over.
    pub attempt: u32,
    pub incident: IncidentId,
    pub severity: Severity,
    pub runbook: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub phase: Phase,
    pub body: Vec<u8>,
    /// Its incident records plans only (shadow mode, or a drill in `plan`
    /// mode): the run is planned, never executed.
    pub shadow: bool,
    /// A run that paused on an approval step and was decided: it resumes.
    pub resume: Option<crate::record::Resume>,
    /// A re-run: the first run of what it re-runs.
    pub rerun_of: Option<i64>,
}

/// What a heartbeat learned about the runs it renewed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Runs this replica no longer holds (taken over, or ended elsewhere):
    /// stop them and write nothing more.
    pub lost: Vec<i64>,
    /// Runs whose cancellation was requested (by any replica).
    pub cancel: Vec<i64>,
}

/// How a claimed run ended, for the store.
#[derive(Debug, Clone)]
pub struct Finished {
    pub lease: Lease,
    /// How it ended (an outcome, or `planned` / `interrupted`).
    pub state: RunState,
    pub summary: String,
    pub result: Option<crate::incident::RunDetail>,
    /// With `state` `awaiting_approval`: the run paused on this approval
    /// step; the store keeps `result` (the steps so far) and waits.
    pub awaiting: Option<crate::approval::Request>,
}

impl Finished {
    /// A pause on an approval step turned into the run's end, because its
    /// cancellation was asked for while it ran (the fence is still checked).
    #[must_use]
    pub fn cancelled_instead(&self) -> Finished {
        Finished {
            lease: self.lease,
            state: RunState::Cancelled,
            summary: format!("{}; cancelled before it asked for approval", self.summary),
            result: self.result.clone().map(|mut r| {
                if let crate::incident::RunDetail::Executed(x) = &mut r {
                    x.outcome = crate::record::RunOutcome::Cancelled;
                    for s in &mut x.steps {
                        if s.outcome == Some(crate::record::StepOutcome::AwaitingApproval) {
                            s.outcome = Some(crate::record::StepOutcome::Cancelled);
                        }
                    }
                }
                r
            }),
            awaiting: None,
        }
    }
}

/// Whether a run's end was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Recorded,
    /// The run's fence moved on (it was taken over): nothing was written.
    Fenced,
}

/// Which running runs to take back from their owners.
#[derive(Debug, Clone)]
pub enum Reap {
    /// Every running run (SQLite at start: no other process can hold one).
    All { why: String },
    /// Runs whose lease expired (their replica died or stalled).
    Expired,
}

/// What reaping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Ended `interrupted`: a step may have started and must not run twice.
    pub interrupted: usize,
    /// Queued again (`idempotent: true`), attempt counted.
    pub requeued: usize,
}

/// Filters of the incidents list.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    pub status: Option<crate::incident::StatusFilter>,
    /// Only SLO-affecting incidents (`true`) or only the others.
    pub slo_affecting: Option<bool>,
    pub severity: Option<Severity>,
    pub runbook: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl IncidentFilter {
    /// (limit, offset): 50 by default, 500 at most.
    #[must_use]
    pub fn page(&self) -> (u32, u32) {
        (self.limit.unwrap_or(50).min(500), self.offset.unwrap_or(0))
    }
}

/// ` FROM incidents i WHERE …` for a filter, with its arguments; `mark` is
/// the backend's parameter prefix (`?` for SQLite, `$` for PostgreSQL).
pub(crate) fn incident_filter(f: &IncidentFilter, mark: char) -> (String, Vec<String>) {
    use std::fmt::Write as _;
    let mut sql = String::from(" FROM incidents i WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    match f.status {
        None => {}
        Some(crate::incident::StatusFilter::Open) => sql.push_str(" AND status <> 'resolved'"),
        Some(crate::incident::StatusFilter::Is(s)) => {
            args.push(s.as_str().to_owned());
            let _ = write!(sql, " AND status = {mark}{}", args.len());
        }
    }
    if let Some(s) = f.severity {
        args.push(s.to_string());
        let _ = write!(sql, " AND severity = {mark}{}", args.len());
    }
    // The rule of [`slo_affecting`], in SQL.
    match f.slo_affecting {
        None => {}
        Some(true) => sql.push_str(
            " AND (slo_affecting IS TRUE OR (slo_affecting IS NULL AND severity IN ('sev1', 'sev2')))",
        ),
        Some(false) => sql.push_str(
            " AND (slo_affecting IS FALSE OR (slo_affecting IS NULL AND severity NOT IN ('sev1', 'sev2')))",
        ),
    }
    if let Some(rb) = &f.runbook {
        // Runbook names are stored as a JSON list: match `"name"` literally.
        let literal = rb
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(format!("%\"{literal}\"%"));
        let _ = write!(sql, " AND runbooks LIKE {mark}{} ESCAPE '\\'", args.len());
    }
    (sql, args)
}

/// Numbers for `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub window_seconds: u64,
    pub incidents_opened: i64,
    pub incidents_resolved: i64,
    pub incidents_open: i64,
    /// Mean time to recovery: the mean of (when the alerts ended − when the
    /// incident opened) over the incidents opened in the window and
    /// resolved; null when none was resolved. The end is the latest `endsAt`
    /// Alertmanager reported (or `resolved_at` when it reported none).
    pub mttr_seconds: Option<f64>,
    /// The same to `resolved_at`, when the resolved notification arrived:
    /// includes Alertmanager's delay (`group_interval`, retries).
    pub mttr_notified_seconds: Option<f64>,
    pub runs_by_state: BTreeMap<String, i64>,
    pub queued_runs: i64,
    pub notifications: i64,
}

/// Output of running steps of an incident, after a cursor.
#[derive(Debug, Clone, Serialize)]
pub struct LiveChunk {
    pub cursor: i64,
    pub run: i64,
    pub step: String,
    pub stream: String,
    pub text: String,
}

/// The incident-like fields of a notification about a service's budget:
/// its title, severity (sev2), status (open while frozen, resolved once
/// unfrozen: PagerDuty resolves the page) and the service.
pub(crate) fn budget_item(
    service: &str,
    event: crate::runbook::notify::Event,
) -> (
    String,
    crate::runbook::Severity,
    crate::incident::IncidentStatus,
    Vec<String>,
) {
    use crate::incident::IncidentStatus;
    (
        format!("Error budget of {service}"),
        crate::runbook::Severity::Sev2,
        if event == crate::runbook::notify::Event::BudgetUnfrozen {
            IncidentStatus::Resolved
        } else {
            IncidentStatus::Investigating
        },
        vec![service.to_owned()],
    )
}

/// One entry of a service's timeline: its budget frozen or unfrozen by its
/// policies, its gate overridden or the override ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    pub at: DateTime<Utc>,
    pub author: String,
    /// `frozen`, `unfrozen`, `overridden`, `override_ended`,
    /// `postmortem_required`.
    pub kind: String,
    pub message: String,
}

/// An operator's override of a frozen service's gate: the gate says yes
/// until `until` (or until someone ends it), whatever the policies say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GateOverride {
    pub service: String,
    /// Who overrode it.
    pub by: String,
    /// Why.
    pub reason: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// A policy over an incident's cost requires its postmortem
/// (`require_postmortem`): why, and whom its `notify` actions name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostmortemRequired {
    pub reason: String,
    pub notify: Vec<String>,
    /// The services whose SLOs the incident spent past a policy's share:
    /// their timelines say so too.
    pub services: Vec<String>,
}

/// A firing alert that no runbook matched.
#[derive(Debug, Clone, Serialize)]
pub struct UnmatchedAlert {
    pub fingerprint: String,
    pub alertname: String,
    pub labels: crate::alert::Labels,
    pub receiver: String,
    pub first_seen: String,
    pub last_seen: String,
    /// Notifications it came in.
    pub seen: i64,
}

/// How long a finished run's live output stays readable (a stream that
/// polls it gets the output that arrived just before the end).
pub(crate) const LIVE_TAIL: Duration = Duration::from_secs(30);

/// Unmatched alerts kept, the most recently seen.
pub(crate) const UNMATCHED_KEPT: i64 = 1000;

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn now() -> String {
    ts(Utc::now())
}

pub(crate) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// The notification rules of the runbooks matching the notification's
/// firing alerts (what an incident remembers, and arms timers from).
pub(crate) fn firing_policies(input: &Ingest) -> crate::runbook::notify::Policies {
    input
        .notification
        .alerts
        .iter()
        .zip(&input.matches)
        .filter(|(a, _)| a.status == crate::alert::Status::Firing)
        .flat_map(|(_, m)| m.iter())
        .filter(|m| !m.policy.is_empty())
        .map(|m| (m.name.clone(), m.policy.clone()))
        .collect()
}

/// The services an incident is about: each alert's `service` (or `job`) label.
pub(crate) fn services(n: &Notification) -> BTreeSet<String> {
    n.alerts
        .iter()
        .filter_map(|a| {
            a.labels
                .get("service")
                .or_else(|| a.labels.get("job"))
                .cloned()
        })
        .collect()
}

/// Label values as a list shows them: at most 256 characters each, so that
/// a list of many alerts stays small whatever their labels hold.
pub(crate) fn shortened(labels: &crate::alert::Labels) -> BTreeMap<&str, String> {
    labels
        .iter()
        .map(|(k, v)| {
            let short = match v.char_indices().nth(256) {
                Some((at, _)) => format!("{}…", &v[..at]),
                None => v.clone(),
            };
            (k.as_str(), short)
        })
        .collect()
}

/// When the incident's alerts really ended: the latest parseable `endsAt`,
/// clamped to [opened, now] so that an `endsAt` in the future (or in 9999)
/// cannot skew MTTR.
pub(crate) fn alerts_ended_at<'a>(
    ends: impl IntoIterator<Item = &'a str>,
    opened: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let latest = ends
        .into_iter()
        .filter_map(|e| DateTime::parse_from_rfc3339(e).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()?;
    Some(latest.clamp(opened, Utc::now().max(opened)))
}

/// A stored run record, typed; one this runbookd cannot read (a newer
/// runbookd wrote it) is an error, never a guess.
pub(crate) fn run_detail(
    raw: Option<&str>,
) -> std::result::Result<Option<crate::incident::RunDetail>, String> {
    match raw {
        None => Ok(None),
        Some(s) => serde_json::from_str::<Option<crate::incident::RunDetail>>(s)
            .map_err(|e| format!("a run record this runbookd cannot read: {e}")),
    }
}

/// Who ticked a checklist item, and when, by (run id, step name).
pub(crate) type Ticks = HashMap<(i64, String), (String, crate::timestamp::Timestamp)>;

/// The runs a later re-run took the place of (a run's lineage is its
/// `rerun_of`, or itself): their open checklist items and failures no
/// longer count.
pub(crate) fn superseded(runs: &[(i64, i64)]) -> BTreeSet<i64> {
    let mut latest: HashMap<i64, i64> = HashMap::new();
    for &(id, lineage) in runs {
        let l = latest.entry(lineage).or_insert(id);
        *l = (*l).max(id);
    }
    runs.iter()
        .filter(|(id, lineage)| latest.get(lineage).is_some_and(|l| l > id))
        .map(|(id, _)| *id)
        .collect()
}

/// A run as the checklist sees it.
pub(crate) struct ChecklistRun<'a> {
    pub id: i64,
    pub runbook: &'a str,
    /// Its `rerun_of`, or itself.
    pub lineage: i64,
    pub result: Option<&'a crate::incident::RunDetail>,
}

impl<'a> ChecklistRun<'a> {
    pub fn of(r: &'a crate::incident::RunRecord) -> Self {
        ChecklistRun {
            id: r.id.0,
            runbook: &r.runbook,
            lineage: r.rerun_of.unwrap_or(r.id).0,
            result: r.result.as_ref(),
        }
    }
}

/// The incident's checklist: the manual steps its runs reached, done (with
/// who and when) or open; a superseded run's open items are left out.
pub(crate) fn checklist(
    runs: &[ChecklistRun<'_>],
    ticks: &Ticks,
) -> Vec<crate::incident::ChecklistItem> {
    let gone = superseded(&runs.iter().map(|r| (r.id, r.lineage)).collect::<Vec<_>>());
    runs.iter()
        .filter_map(|run| run.result.map(|res| (run, res)))
        .flat_map(|(run, res)| {
            let gone = gone.contains(&run.id);
            res.open_checklist().filter_map(move |s| {
                let done = ticks.get(&(run.id, s.name.clone()));
                (done.is_some() || !gone).then(|| crate::incident::ChecklistItem {
                    run_id: crate::incident::RunId(run.id),
                    runbook: run.runbook.to_owned(),
                    step: s.name.clone(),
                    text: s.plan.text.clone().unwrap_or_default(),
                    done_by: done.map(|d| d.0.clone()),
                    done_at: done.map(|d| d.1),
                })
            })
        })
        .collect()
}

/// Someone ticks (or reopens) a checklist item.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The run whose manual step it is; may be left out when only one run
    /// of the incident has a step of that name.
    pub run_id: Option<i64>,
    pub step: String,
    /// `false` reopens it.
    pub done: bool,
    pub who: String,
}

/// The item `t` names among `items`: exactly one, or why not.
///
/// # Errors
/// [`StoreError::NotFound`] for no such item, [`StoreError::Conflict`]
/// when several runs have one and `t` does not say which.
pub(crate) fn pick<'a>(
    items: &'a [crate::incident::ChecklistItem],
    t: &Tick,
    incident: IncidentId,
) -> crate::store::Result<&'a crate::incident::ChecklistItem> {
    let found: Vec<&crate::incident::ChecklistItem> = items
        .iter()
        .filter(|i| i.step == t.step && t.run_id.is_none_or(|r| r == i.run_id.0))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(crate::store::StoreError::NotFound(format!(
            "checklist item `{}`{} of {incident} (its items: {})",
            t.step,
            t.run_id
                .map(|r| format!(" of run #{r}"))
                .unwrap_or_default(),
            if items.is_empty() {
                "none".to_owned()
            } else {
                items
                    .iter()
                    .map(|i| format!("`{}` of run #{}", i.step, i.run_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
        many => Err(crate::store::StoreError::Conflict(format!(
            "`{}` is a checklist item of runs {}: say which run",
            t.step,
            many.iter()
                .map(|i| format!("#{}", i.run_id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether run `run` (in `state`, of `incident` in `status`) may be re-run
/// now; `busy`: a run of the same runbook, alert and phase in progress.
///
/// # Errors
/// [`StoreError::Conflict`](crate::store::StoreError::Conflict) saying why not.
pub(crate) fn may_rerun(
    run: i64,
    state: RunState,
    incident: IncidentId,
    status: crate::incident::IncidentStatus,
    runbook: &str,
    busy: Option<i64>,
) -> crate::store::Result<()> {
    let no = |why: String| Err(crate::store::StoreError::Conflict(why));
    if matches!(
        state,
        RunState::Queued | RunState::Running | RunState::AwaitingApproval
    ) {
        return no(format!(
            "run #{run} is {state}: it can be re-run once it has ended"
        ));
    }
    if status == crate::incident::IncidentStatus::Resolved {
        return no(format!(
            "{incident} is resolved, and a re-run belongs to its incident: start a manual run of `{runbook}` instead"
        ));
    }
    if let Some(b) = busy {
        return no(format!(
            "run #{b} of `{runbook}` for the same alert is in progress: wait for it or cancel it"
        ));
    }
    Ok(())
}

/// Who commands an incident after a hand-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandOver {
    pub commander: String,
    pub previous: Option<String>,
    /// False when `commander` already led it.
    pub changed: bool,
}

/// A re-run queued on its incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rerun {
    pub incident: IncidentId,
    pub run: i64,
    /// The first run of what is re-run.
    pub rerun_of: i64,
}

/// The states of an incident's remediation runs that count: a re-run takes
/// the place of the run it re-ran (`$1`: the incident; SQLite and
/// PostgreSQL both bind it).
pub(crate) const CURRENT_REMEDIATION_STATES: &str =
    "SELECT r.state FROM runs r WHERE r.incident_id = $1 AND r.phase = 'remediation'
     AND NOT EXISTS (SELECT 1 FROM runs n WHERE n.incident_id = r.incident_id AND n.id > r.id
                     AND COALESCE(n.rerun_of, n.id) = COALESCE(r.rerun_of, r.id))";

/// What the lifecycle counts of an incident's current remediation runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Not succeeded (nor skipped or cancelled): running, queued, failed.
    pub not_succeeded: usize,
    /// Failed, timed out or interrupted.
    pub failed: usize,
}

impl Tally {
    pub fn of(states: impl IntoIterator<Item = RunState>) -> Tally {
        let mut t = Tally::default();
        for s in states {
            t.not_succeeded += usize::from(!s.settled());
            t.failed += usize::from(matches!(
                s,
                RunState::Failed | RunState::TimedOut | RunState::Interrupted
            ));
        }
        t
    }
}

/// A running run found by reaping, as the store holds it.
pub(crate) struct Leftover<'a> {
    pub runbook: &'a str,
    pub fingerprint: &'a str,
    pub phase: Phase,
    pub started: Option<DateTime<Utc>>,
    /// When its owner last renewed its lease.
    pub heard: Option<DateTime<Utc>>,
    /// Its steps so far (`runs.progress`), if it stored any.
    pub progress: Option<&'a str>,
    /// The live output stored of it: step, stream, bytes.
    pub output: &'a [(String, String, Vec<u8>)],
}

/// What reaping records of a run whose owner stopped: the reason (`why`,
/// and which step was running since when, and when the owner was last
/// heard from) and the run's record (the steps it stored so far, the one
/// it was in `interrupted` with its stored output), or `None` to keep the
/// record it has (a run that resumed after an approval and stored nothing
/// since).
pub(crate) fn leftover_record(why: &str, l: &Leftover<'_>) -> (String, Option<String>) {
    use std::fmt::Write as _;
    let progress = l
        .progress
        .and_then(|p| serde_json::from_str::<crate::record::Progress>(p).ok());
    let mut reason = why.to_owned();
    if let Some(r) = progress.as_ref().and_then(|p| p.running.as_ref()) {
        let _ = write!(
            reason,
            "; step `{}` was running (since {})",
            r.plan.name,
            r.since.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    if let Some(h) = l.heard {
        let _ = write!(
            reason,
            "; its owner was last heard from at {}",
            h.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    let Some(progress) = progress else {
        return (reason, None);
    };
    let of = |stream: &str| {
        let name = progress.running.as_ref().map(|r| r.plan.name.as_str());
        let bytes: Vec<u8> = l
            .output
            .iter()
            .filter(|(step, s, _)| Some(step.as_str()) == name && s == stream)
            .flat_map(|(_, _, b)| b.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let output = (of("stdout"), of("stderr"));
    let record = progress.interrupted(
        (l.runbook, l.fingerprint, l.phase),
        l.started.unwrap_or_else(Utc::now),
        &reason,
        output,
    );
    let json = serde_json::to_string(&crate::incident::RunDetail::Executed(Box::new(record))).ok();
    (reason, json)
}

/// The timeline's wording, the same whichever backend records it.
pub(crate) mod say {
    use super::{Alert, Duration, Notification, Phase, RunState};

    pub fn opened(n: &Notification) -> String {
        let names: std::collections::BTreeSet<&str> = n.alerts.iter().map(Alert::name).collect();
        format!(
            "incident opened for {} from receiver `{}`",
            names.into_iter().collect::<Vec<_>>().join(", "),
            n.receiver
        )
    }

    pub fn alert(a: &Alert) -> String {
        format!("alert {} ({}) {}", a.name(), a.fingerprint, a.status)
    }

    /// Who an alert's timeline entry is from: Alertmanager, or runbookd
    /// for the alerts it makes itself (manual runs, drills).
    #[must_use]
    pub fn alert_author(receiver: &str) -> &'static str {
        if receiver.starts_with("runbookd-") {
            "runbookd"
        } else {
            "alertmanager"
        }
    }

    pub fn cooldown(runbook: &str, last: &str, cooldown: Duration) -> String {
        format!(
            "cooldown: `{runbook}` last ran for this alert at {last}, within its cooldown of {}",
            humantime::format_duration(cooldown)
        )
    }

    /// Why a run over a rate cap is skipped (`server`: the server's
    /// `limits.run_rate`, else the runbook's `rate`).
    pub fn rate_limited(runbook: &str, rate: crate::duration::Rate, server: bool) -> String {
        let window = humantime::format_duration(rate.per);
        if server {
            format!(
                "rate: {} runs started in the last {window} (the server's `limits.run_rate: {rate}`); runs over it are skipped while the storm lasts",
                rate.n
            )
        } else {
            format!(
                "rate: `{runbook}` started {} runs in the last {window} (its `rate: {rate}`); runs over it are skipped while the storm lasts",
                rate.n
            )
        }
    }

    pub fn storm(reason: &str) -> String {
        format!("alert storm: {reason}; people are told once per storm")
    }

    pub fn skipped(id: i64, reason: &str) -> String {
        format!("run #{id} skipped: {reason}")
    }

    pub fn cancelled_resolved(id: i64, runbook: &str) -> String {
        format!("run #{id} of `{runbook}` cancelled: the alert resolved (cancel_on_resolved)")
    }

    pub const CANCELLED_BEFORE_START: &str = "the alert resolved before the run started";

    pub fn cancelled_by(who: &str, was: RunState) -> String {
        if was == RunState::AwaitingApproval {
            format!("cancelled by {who} while it waited for approval")
        } else {
            format!("cancelled by {who} before it started")
        }
    }

    pub const CANCELLED_WAITING: &str = "the alert resolved while the run waited for approval";

    pub fn resumed(id: i64, runbook: &str, a: &crate::approval::Approval, owner: &str) -> String {
        format!(
            "run #{id}: `{runbook}` resumed on {owner} after step `{}` was {}",
            a.step,
            if a.granted() { "approved" } else { "denied" }
        )
    }

    pub fn cancel_requested(id: i64, runbook: &str, who: &str) -> String {
        format!("run #{id} of `{runbook}`: {who} asked to cancel it; its steps are being stopped")
    }

    pub fn started(
        id: i64,
        runbook: &str,
        phase: Phase,
        fingerprint: &str,
        owner: &str,
        attempt: u32,
    ) -> String {
        let again = if attempt > 1 {
            format!(", attempt {attempt}")
        } else {
            String::new()
        };
        format!(
            "run #{id}: `{runbook}` started ({phase}) for alert {fingerprint} on {owner}{again}"
        )
    }

    pub fn finished(id: i64, runbook: &str, state: RunState, summary: &str) -> String {
        format!("run #{id}: `{runbook}` {state}: {summary}")
    }

    pub fn lease_lost(owner: &str) -> String {
        format!(
            "its replica `{owner}` stopped renewing its lease; a step may have started, so the run is not executed again (a runbook with `idempotent: true` is re-queued)"
        )
    }

    pub fn requeued(id: i64, runbook: &str, owner: &str, attempt: u32) -> String {
        format!(
            "run #{id}: `{runbook}` re-queued (idempotent, attempt {attempt}): its replica `{owner}` stopped renewing its lease"
        )
    }

    pub fn commands(who: &str) -> String {
        format!("{who} leads the incident (incident commander): the first to acknowledge it")
    }

    pub fn handed_over(by: &str, from: Option<&str>, to: &str) -> String {
        match from {
            Some(from) if by == to => format!("{to} took command of the incident from {from}"),
            Some(from) => format!("{by} handed command of the incident from {from} to {to}"),
            None if by == to => format!("{to} took command of the incident"),
            None => format!("{by} made {to} the incident commander"),
        }
    }

    pub fn ticked(who: &str, run: i64, step: &str, text: &str, done: bool) -> String {
        if done {
            format!("{who} ticked checklist item `{step}` of run #{run}: {text}")
        } else {
            format!("{who} reopened checklist item `{step}` of run #{run}: {text}")
        }
    }

    pub fn rerun(who: &str, of: i64, runbook: &str, id: i64) -> String {
        format!("{who} re-ran run #{of} of `{runbook}` as run #{id}")
    }

    pub fn requeued_after_restart(id: i64, runbook: &str, attempt: u32) -> String {
        format!(
            "run #{id}: `{runbook}` re-queued (idempotent, attempt {attempt}): runbookd stopped while it was executing"
        )
    }
}

/// `s` with every NUL as U+FFFD: what a text column holds.
#[must_use]
pub fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn text_labels(labels: &crate::alert::Labels) -> crate::alert::Labels {
    labels.iter().map(|(k, v)| (text(k), text(v))).collect()
}

/// The notification as both stores hold it: NUL rewritten in its text
/// (receiver, group key, labels, annotations, generator URL).
#[must_use]
pub fn storable(
    n: &crate::alert::Notification,
) -> std::borrow::Cow<'_, crate::alert::Notification> {
    let has_nul = |s: &str| s.contains('\0');
    let labels_nul = |l: &crate::alert::Labels| l.iter().any(|(k, v)| has_nul(k) || has_nul(v));
    if !has_nul(&n.receiver)
        && !has_nul(&n.group_key)
        && !n.alerts.iter().any(|a| {
            labels_nul(&a.labels) || labels_nul(&a.annotations) || has_nul(&a.generator_url)
        })
    {
        return std::borrow::Cow::Borrowed(n);
    }
    let mut n = n.clone();
    n.receiver = text(&n.receiver);
    n.group_key = text(&n.group_key);
    for a in &mut n.alerts {
        a.labels = text_labels(&a.labels);
        a.annotations = text_labels(&a.annotations);
        a.generator_url = text(&a.generator_url);
    }
    std::borrow::Cow::Owned(n)
}

/// Whether an incident is SLO-affecting: it spent error budget (`stored`,
/// recorded once it resolved), or, while that is not known or its services
/// have no SLO, it is sev1 or sev2 (the guide's `is_slo_affecting`).
#[must_use]
pub fn slo_affecting(stored: Option<bool>, severity: crate::runbook::Severity) -> bool {
    stored.unwrap_or(severity.affects_slos())
}

/// The columns of an incident summary: the incident's own, its alert counts
/// and what its first alert is about (at most 128 characters of the first of
/// [`crate::incident::SUBJECT_LABELS`] it has), so a list never loads whole
/// label sets. `label` is the backend's expression for one label of
/// `labels` (JSON text).
pub(crate) fn summary_columns(label: impl Fn(&str) -> String) -> String {
    let subject: Vec<String> = crate::incident::SUBJECT_LABELS
        .iter()
        .map(|l| label(l))
        .collect();
    format!(
        "i.*, (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id) AS alert_count,
         (SELECT COUNT(*) FROM alerts a WHERE a.incident_id = i.id AND a.status = 'firing') AS firing_count,
         (SELECT COUNT(*) FROM runs r WHERE r.incident_id = i.id AND r.state = 'awaiting_approval') AS awaiting_approval,
         (SELECT substr(COALESCE({}), 1, 128) FROM alerts a WHERE a.incident_id = i.id ORDER BY first_seen, fingerprint LIMIT 1) AS subject",
        subject.join(", ")
    )
}

/// The silences to end now: those of runs that ended (`until: run_end`),
/// and those whose alert or incident resolved (`until: resolved`). The same
/// SQL on both backends.
pub(crate) const SILENCES_DUE: &str = "FROM silences s JOIN runs r ON r.id = s.run_id JOIN incidents i ON i.id = s.incident_id
     WHERE s.ended_at IS NULL AND (
       (s.until = 'run_end' AND r.state NOT IN ('queued', 'running', 'awaiting_approval'))
       OR (s.until = 'resolved' AND (i.status = 'resolved' OR EXISTS (
         SELECT 1 FROM alerts a WHERE a.incident_id = s.incident_id AND a.fingerprint = s.fingerprint
           AND a.starts_at = s.starts_at AND a.status = 'resolved'))))";
