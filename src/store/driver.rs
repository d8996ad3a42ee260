//! What a backend is: a driver of single statements.
//!
//! The control flow of the store's operations (what to read, what it
//! means, what to write next) lives once, in [`super::flow`], over this
//! trait. Each backend implements it with one statement per method, in the
//! transaction the operation runs in, and decides nothing: SQLite runs its
//! statements synchronously on its writer's connection (the futures are
//! ready when first polled, see [`super::sqlite`]'s `now`), PostgreSQL
//! sends them on the operation's transaction, where it also takes the row
//! locks a method names ("locks the row") and notifies the other replicas.
//!
//! Timestamps are the backend's: SQLite stores RFC 3339 text from this
//! process's clock, PostgreSQL `timestamptz` from the database's. Methods
//! that return a time give it as [`super::types::ts`] formats it.

use chrono::{DateTime, Utc};

use crate::alert::{Alert, Notification, Status};
use crate::approval::{Approval, Decision, Request};
use crate::incident::notices::{
    About, DeliveryState, EscalationRecord, MessageRecord, OutboxItem, Queue, Settle, TimerState,
};
use crate::incident::{
    AlertRecord, IncidentStatus, IncidentSummary, OutputChunk, RunRecord, RunState, TimelineEntry,
};
use crate::plan::Phase;
use crate::runbook::notify::{Escalation, Unless};
use crate::runbook::Severity;
use crate::store::types::{GateOverride, ServiceEntry, Ticks};
use crate::store::RunbookMatch;
use crate::store::{Lease, StoreError};

/// A driver's answer: the value, or the backend's failure.
pub(super) type Op<T, F> = std::result::Result<T, F>;

/// An escalation timer that is due, with what decides whether it fires.
#[derive(Debug)]
pub(super) struct DueEscalation {
    pub id: i64,
    pub incident: i64,
    pub runbook: String,
    /// The targets and conditions as stored (JSON lists).
    pub notify: String,
    pub unless: String,
    pub message: Option<String>,
    pub after_ms: i64,
    pub status: IncidentStatus,
    pub acknowledged: bool,
    pub shadow: bool,
    /// A remediation run of the timer's runbook succeeded on the incident.
    pub succeeded: bool,
}

/// The run a re-run repeats, and its incident's status.
#[derive(Debug)]
pub(super) struct RerunSource {
    pub incident: i64,
    pub notification: i64,
    pub runbook: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub phase: String,
    pub state: RunState,
    /// The first run of the lineage.
    pub lineage: i64,
    pub idempotent: bool,
    pub status: IncidentStatus,
}

/// A run of an incident as its checklist needs it: id, runbook, lineage,
/// stored result.
pub(super) type ChecklistRow = (i64, String, i64, Option<String>);

/// The statements of the store, one per method. `Fail` is the backend's
/// failure, into which the flow's own errors convert.
#[allow(async_fn_in_trait)]
pub(super) trait Driver {
    type Fail: From<StoreError>;

    // -- incidents ---------------------------------------------------------

    /// Adds an entry to an incident's timeline.
    async fn timeline(
        &self,
        incident: i64,
        author: &str,
        kind: &str,
        message: &str,
        status: Option<IncidentStatus>,
    ) -> Op<(), Self::Fail>;

    /// Runs' entries on an incident's timeline (by runbookd), in order,
    /// each followed by its status entry when the incident's status moves
    /// with it; and the status they leave (as [`Driver::set_status`], in
    /// turn). PostgreSQL: one statement.
    async fn run_noted(
        &self,
        incident: i64,
        notes: &[(&str, Option<&crate::lifecycle::Transition>)],
    ) -> Op<(), Self::Fail> {
        for (note, change) in notes {
            self.timeline(incident, "runbookd", "run", note, None)
                .await?;
            if let Some(t) = change {
                self.timeline(incident, t.author, "status", &t.message, Some(t.status))
                    .await?;
                self.set_status(incident, t.status, t.run_failed).await?;
            }
        }
        Ok(())
    }

    /// Marks an incident updated now.
    async fn touch(&self, incident: i64) -> Op<(), Self::Fail>;

    /// The incident's status and whether a remediation run of it failed.
    /// Locks its row: what the lifecycle decides from it is written before
    /// another transaction reads it.
    async fn lifecycle(&self, incident: i64) -> Op<crate::lifecycle::Incident, Self::Fail>;

    /// What a run's start or end consults of its incident: [`Driver::lifecycle`],
    /// [`Driver::policies`] and [`Driver::remediation_states`] read
    /// together (PostgreSQL: one statement, which does not lock: its
    /// callers lock the incident first, [`Driver::lock_run_incident`]).
    async fn run_context(&self, incident: i64) -> Op<RunContext, Self::Fail> {
        let (now, policies, remediation) = futures_util::future::try_join3(
            self.lifecycle(incident),
            self.policies(incident),
            self.remediation_states(incident),
        )
        .await?;
        Ok(RunContext {
            now,
            policies,
            remediation,
        })
    }

    /// Sets the incident's status (stamping `resolved_at` when resolved)
    /// and, when given, whether a run of it failed.
    async fn set_status(
        &self,
        incident: i64,
        status: IncidentStatus,
        run_failed: Option<bool>,
    ) -> Op<(), Self::Fail>;

    /// Whether the incident exists; locks its row.
    async fn lock_incident(&self, incident: i64) -> Op<bool, Self::Fail>;

    /// Locks the row of `run`'s incident, before anything joined after it
    /// runs: a run's start or end reads its incident's state after it (so
    /// it sees what the last writer left) and moves the incident on from
    /// there before another one reads it. Two runs of one incident ending
    /// at once would otherwise each see the other still running.
    async fn lock_run_incident(&self, run: i64) -> Op<(), Self::Fail>;

    // -- notifications and escalations ---------------------------------------

    /// The incident's notification rules (JSON) and whether it is a shadow
    /// incident.
    async fn policies(&self, incident: i64) -> Op<(String, bool), Self::Fail>;

    async fn set_policies(&self, incident: i64, json: &str) -> Op<(), Self::Fail>;

    /// Queues one notification, about an incident or a service's budget.
    async fn outbox_insert(
        &self,
        about: &About,
        q: &Queue,
        state: DeliveryState,
        source: Option<(i64, &str)>,
    ) -> Op<(), Self::Fail>;

    /// Starts an escalation timer (once per incident, runbook and rule).
    async fn escalation_arm(
        &self,
        incident: i64,
        runbook: &str,
        rule: usize,
        e: &Escalation,
    ) -> Op<(), Self::Fail>;

    /// Cancels the incident's pending timers: those `unless` names (and of
    /// `runbook`, when given), or all of them when `unless` is `None`.
    async fn escalations_cancel(
        &self,
        incident: i64,
        unless: Option<Unless>,
        runbook: Option<&str>,
        reason: &str,
    ) -> Op<u64, Self::Fail>;

    /// The timers due now (at most 100), oldest first; locks them.
    async fn escalations_due(&self) -> Op<Vec<DueEscalation>, Self::Fail>;

    /// Ends a pending timer (`Cancelled` or `Fired`); false when it was not
    /// pending any more.
    async fn escalation_end(
        &self,
        id: i64,
        state: TimerState,
        reason: &str,
    ) -> Op<bool, Self::Fail>;

    async fn mark_escalated(&self, incident: i64) -> Op<(), Self::Fail>;

    /// Whether the incident is acknowledged and has a commander; `None`
    /// when there is no such incident. Locks its row.
    async fn acknowledgement(&self, incident: i64) -> Op<Option<(bool, bool)>, Self::Fail>;

    /// Records the acknowledgement (and `who` as commander, if none).
    async fn acknowledge(&self, incident: i64, who: &str) -> Op<(), Self::Fail>;

    /// Takes up to `limit` due notifications for `owner` (no two of the
    /// same incident and notifier at once): their ids and attempts.
    async fn outbox_take(
        &self,
        owner: &str,
        limit: u32,
        lease: std::time::Duration,
    ) -> Op<Vec<(i64, u32)>, Self::Fail>;

    /// A taken notification with what its message needs.
    async fn outbox_item(&self, id: i64, attempt: u32) -> Op<OutboxItem, Self::Fail>;

    /// Records how an attempt ended, if it is still the latest.
    async fn outbox_settle(&self, id: i64, attempt: u32, s: &Settle) -> Op<bool, Self::Fail>;

    /// A notification's state; locks its row.
    async fn outbox_state(&self, id: i64) -> Op<Option<DeliveryState>, Self::Fail>;

    /// Queues a notification again with a fresh age and no attempts.
    async fn outbox_requeue(&self, id: i64) -> Op<(), Self::Fail>;

    // -- approvals -----------------------------------------------------------

    /// Records a pending approval; its deadline.
    async fn approval_insert(
        &self,
        run: i64,
        incident: i64,
        runbook: &str,
        r: &Request,
    ) -> Op<String, Self::Fail>;

    /// Locks a run's row (before its approvals: the order cancel takes them in).
    async fn lock_run(&self, run: i64) -> Op<(), Self::Fail>;

    /// Queues a run that awaited approval; its incident, or `None` when it
    /// no longer waited.
    async fn requeue_awaiting(&self, run: i64) -> Op<Option<i64>, Self::Fail>;

    /// Tells every replica's claim loop that a run was queued.
    async fn wake_claimers(&self) -> Op<(), Self::Fail>;

    /// Decides the run's latest approval if it is `approval`, pending and
    /// before its deadline.
    async fn approval_decide(
        &self,
        run: i64,
        approval: i64,
        decision: Decision,
        who: &str,
        comment: Option<&str>,
    ) -> Op<Option<Approval>, Self::Fail>;

    async fn run_state(&self, run: i64) -> Op<Option<RunState>, Self::Fail>;

    /// The run's stored result (JSON).
    async fn run_result(&self, run: i64) -> Op<Option<String>, Self::Fail>;

    async fn last_approval(&self, run: i64) -> Op<Option<Approval>, Self::Fail>;

    /// The pending approvals past their deadline, as (approval, run), in
    /// the order of their runs' incidents; nothing is locked (see
    /// [`Driver::approval_expire`]).
    async fn approvals_due(&self) -> Op<Vec<(i64, i64)>, Self::Fail>;

    /// Times out `approval` if it is still pending past its deadline (of
    /// two replicas, one does); what it became.
    async fn approval_expire(&self, approval: i64) -> Op<Option<Approval>, Self::Fail>;

    /// Cancels a run's pending approval.
    async fn approvals_withdraw(&self, run: i64) -> Op<(), Self::Fail>;

    // -- people --------------------------------------------------------------

    /// Who ticked which checklist items of the incident's runs.
    async fn ticks(&self, incident: i64) -> Op<Ticks, Self::Fail>;

    /// The incident's runs, oldest first.
    async fn checklist_runs(&self, incident: i64) -> Op<Vec<ChecklistRow>, Self::Fail>;

    /// Ticks a checklist item; when.
    async fn tick_insert(
        &self,
        run: i64,
        step: &str,
        who: &str,
    ) -> Op<crate::timestamp::Timestamp, Self::Fail>;

    async fn tick_delete(&self, run: i64, step: &str) -> Op<(), Self::Fail>;

    /// The states of the incident's current remediation runs (the latest
    /// of each lineage).
    async fn remediation_states(&self, incident: i64) -> Op<Vec<RunState>, Self::Fail>;

    /// The incident's commander and whether it is acknowledged; locks its row.
    async fn command(&self, incident: i64) -> Op<Option<(Option<String>, bool)>, Self::Fail>;

    async fn commander(&self, incident: i64) -> Op<Option<String>, Self::Fail>;

    async fn set_commander(&self, incident: i64, to: &str) -> Op<(), Self::Fail>;

    /// The run a re-run would repeat; locks its incident.
    async fn rerun_source(&self, run: i64) -> Op<Option<RerunSource>, Self::Fail>;

    /// A run of the same runbook, alert and phase in progress.
    async fn run_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
        phase: &str,
    ) -> Op<Option<i64>, Self::Fail>;

    /// Queues the next re-run of `src` (numbered after the last of its run
    /// key); its id.
    async fn insert_rerun(&self, src: &RerunSource) -> Op<i64, Self::Fail>;

    // -- ingest ---------------------------------------------------------------

    /// Records a notification as received; its id.
    async fn notification_insert(&self, n: &Notification, body: &[u8]) -> Op<i64, Self::Fail>;

    /// Keeps a firing alert no runbook matched (one row per fingerprint).
    async fn unmatched_upsert(&self, alert: &Alert, receiver: &str) -> Op<u64, Self::Fail>;

    /// Keeps only the newest `UNMATCHED_KEPT` unmatched alerts.
    async fn unmatched_trim(&self) -> Op<(), Self::Fail>;

    /// The group's incident that is not resolved; locks it.
    async fn open_incident(
        &self,
        receiver: &str,
        group_key: &str,
    ) -> Op<Option<OpenIncident>, Self::Fail>;

    /// Sets an incident's severity, services and runbooks (JSON lists).
    async fn incident_scope(
        &self,
        incident: i64,
        severity: Severity,
        services: &str,
        runbooks: &str,
    ) -> Op<(), Self::Fail>;

    /// Opens the group's incident, `investigating`; `None` when another
    /// transaction opened it first.
    async fn incident_insert(
        &self,
        n: &Notification,
        title: &str,
        severity: Severity,
        services: &str,
        runbooks: &str,
        shadow: bool,
    ) -> Op<Option<i64>, Self::Fail>;

    /// Ties a notification to its incident.
    async fn notification_link(&self, notification: i64, incident: i64) -> Op<(), Self::Fail>;

    /// The stored status of the incident's alert (by fingerprint and start).
    async fn alert_status(
        &self,
        incident: i64,
        alert: &Alert,
        starts: &str,
    ) -> Op<Option<Status>, Self::Fail>;

    /// Records the alert, or its new status, end and annotations.
    async fn alert_upsert(&self, incident: i64, alert: &Alert, starts: &str) -> Op<(), Self::Fail>;

    /// Queues a run unless its run key is known or a run of the same
    /// runbook, alert (fingerprint) and phase is in progress; its id.
    async fn run_insert(
        &self,
        incident: i64,
        notification: i64,
        m: &RunbookMatch,
        key: (&str, &str),
        phase: Phase,
    ) -> Op<Option<i64>, Self::Fail>;

    /// When a remediation run of the runbook and alert (other than `not`,
    /// and not skipped) was last queued within `within`.
    async fn last_queued(
        &self,
        runbook: &str,
        fingerprint: &str,
        not: i64,
        within: std::time::Duration,
    ) -> Op<Option<String>, Self::Fail>;

    /// Ends a queued run `skipped`, marked rate-limited or not.
    async fn skip_run(&self, run: i64, reason: &str, rate_limited: bool) -> Op<(), Self::Fail>;

    /// How many remediation runs (of `runbook`, or of all) other than `not`
    /// were queued and not skipped within `rate.per`, counted up to
    /// `rate.n`; holds the cap's count until the operation ends.
    async fn started_within(
        &self,
        runbook: Option<&str>,
        rate: crate::duration::Rate,
        not: i64,
    ) -> Op<i64, Self::Fail>;

    /// Whether another run of the runbook was skipped for a rate cap within
    /// `window`.
    async fn storming(
        &self,
        runbook: &str,
        not: i64,
        window: std::time::Duration,
    ) -> Op<bool, Self::Fail>;

    /// The runbook's remediation runs of the alert in progress, by id;
    /// locks them (in that order).
    async fn remediations_in_progress(
        &self,
        runbook: &str,
        fingerprint: &str,
    ) -> Op<Vec<RemediationInProgress>, Self::Fail>;

    async fn unresolved_alerts(&self, incident: i64) -> Op<i64, Self::Fail>;

    /// When the incident opened, if when its alerts ended is not known yet.
    async fn alerts_not_ended(&self, incident: i64) -> Op<Option<DateTime<Utc>>, Self::Fail>;

    /// The incident's alerts' `endsAt`, as Alertmanager sent them.
    async fn alert_ends(&self, incident: i64) -> Op<Vec<String>, Self::Fail>;

    async fn set_alerts_ended(
        &self,
        incident: i64,
        at: Option<DateTime<Utc>>,
    ) -> Op<(), Self::Fail>;

    /// Runs waiting to start.
    async fn queued_runs(&self) -> Op<i64, Self::Fail>;

    // -- claims ---------------------------------------------------------------

    /// Serializes claimers until the operation ends (the caps are counted,
    /// then filled, without another claimer in between). Statements joined
    /// after it (polled after it) are executed once it is held.
    async fn claim_lock(&self) -> Op<(), Self::Fail>;

    /// The running runs of each runbook (their sum is the cluster's).
    async fn running_per_runbook(&self) -> Op<Vec<(String, u32)>, Self::Fail>;

    /// Up to `limit` queued runs after run `after`, oldest first, but for
    /// those of the runbooks in `skip`. Nothing is locked: claimers are
    /// serialized already, and [`Driver::take`] starts a run only while it
    /// is still queued.
    async fn queued(
        &self,
        after: i64,
        limit: i64,
        skip: &[String],
    ) -> Op<Vec<(i64, String)>, Self::Fail>;

    /// [`Driver::running_per_runbook`] and the queue's first page
    /// ([`Driver::queued`] from its start), which a claim reads first.
    /// PostgreSQL: one statement, so one snapshot and one round trip.
    async fn claim_view(&self, limit: i64) -> Op<ClaimView, Self::Fail> {
        futures_util::future::try_join(self.running_per_runbook(), self.queued(0, limit, &[])).await
    }

    /// Starts a queued run for `owner` with a lease and a new fence (a run
    /// resuming after an approval keeps its start and attempt), with what
    /// executing it needs; `None` when it is no longer queued. Its start is
    /// not noted yet ([`Driver::start_unnoted`]).
    async fn take(
        &self,
        run: i64,
        owner: &str,
        lease: std::time::Duration,
    ) -> Op<Option<(ClaimedRun, Taken)>, Self::Fail>;

    /// Marks a taken run's start noted, if it was not (and, with `fence`,
    /// only while the run holds it): what noting it needs, with its
    /// incident's [`RunContext`]. `None` for a start noted already: a start
    /// is noted once, whoever comes first (the run's owner, its end, a
    /// takeover).
    async fn start_unnoted(
        &self,
        run: i64,
        fence: Option<i64>,
    ) -> Op<Option<(UnnotedStart, RunContext)>, Self::Fail>;

    // -- reads and SLO records -------------------------------------------------

    /// The incident's summary and root cause.
    async fn summary(
        &self,
        incident: i64,
    ) -> Op<Option<(IncidentSummary, Option<String>)>, Self::Fail>;

    async fn alerts_of(&self, incident: i64) -> Op<Vec<AlertRecord>, Self::Fail>;

    /// The incident's runs, oldest first, without their live output.
    async fn runs_of(&self, incident: i64) -> Op<Vec<RunRecord>, Self::Fail>;

    /// A running run's live output stored so far.
    async fn live_output_of(&self, run: i64) -> Op<Vec<OutputChunk>, Self::Fail>;

    async fn timeline_of(&self, incident: i64) -> Op<Vec<TimelineEntry>, Self::Fail>;

    async fn messages_of(&self, incident: i64) -> Op<Vec<MessageRecord>, Self::Fail>;

    async fn escalations_of(&self, incident: i64) -> Op<Vec<EscalationRecord>, Self::Fail>;

    async fn approvals_of(&self, incident: i64) -> Op<Vec<Approval>, Self::Fail>;

    /// Records an incident's SLO budget unless it is recorded already;
    /// whether it recorded it.
    async fn record_budget(
        &self,
        incident: i64,
        budget: &str,
        affecting: Option<bool>,
    ) -> Op<bool, Self::Fail>;

    /// Whether the service's budget is frozen, as last written, and the
    /// notifiers (JSON) it was frozen with (`None`: never written); the row
    /// is locked until the transaction ends.
    async fn budget_state(&self, service: &str) -> Op<Option<(bool, String)>, Self::Fail>;

    /// Writes the service's freeze if it still is `expected` (`None`: no
    /// row yet): whether it wrote (another replica may have been first).
    async fn budget_state_put(
        &self,
        service: &str,
        state: (bool, &str, &str),
        at: DateTime<Utc>,
        expected: Option<bool>,
    ) -> Op<bool, Self::Fail>;

    async fn service_timeline_insert(
        &self,
        service: &str,
        author: &str,
        kind: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Op<(), Self::Fail>;

    /// The service's timeline, newest first, at most `limit` entries.
    async fn service_timeline_of(
        &self,
        service: &str,
        limit: u32,
    ) -> Op<Vec<ServiceEntry>, Self::Fail>;

    /// Ends the service's overrides in force at `at`, saying who ended
    /// them; how many.
    async fn overrides_end(
        &self,
        service: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Op<u64, Self::Fail>;

    async fn override_insert(&self, o: &GateOverride) -> Op<(), Self::Fail>;

    /// The overrides in force at `at`, oldest first.
    async fn overrides_open(&self, at: DateTime<Utc>) -> Op<Vec<GateOverride>, Self::Fail>;

    /// Marks an incident postmortem-required, with why.
    async fn require_postmortem(&self, incident: i64, reason: &str) -> Op<(), Self::Fail>;

    async fn slo_statuses_clear(&self) -> Op<(), Self::Fail>;

    async fn slo_status_insert(
        &self,
        id: &str,
        status: &str,
        at: DateTime<Utc>,
        took_ms: i64,
    ) -> Op<(), Self::Fail>;

    /// Claims one scheduled occurrence of a runbook's drill; false when it
    /// was claimed already.
    async fn claim_drill(
        &self,
        runbook: &str,
        drill: &str,
        at: DateTime<Utc>,
        owner: &str,
    ) -> Op<bool, Self::Fail>;

    // -- runs ---------------------------------------------------------------

    /// Renews the leases `owner` holds: the runs still held, each with
    /// whether its cancellation was requested.
    async fn renew(
        &self,
        owner: &str,
        runs: &[Lease],
        lease: std::time::Duration,
    ) -> Op<Vec<(i64, bool)>, Self::Fail>;

    /// Whether `lease` still holds its run; holds the row until the
    /// operation ends (a takeover waits for it).
    async fn holds(&self, lease: Lease) -> Op<bool, Self::Fail>;

    /// Appends a chunk of live output to a run's step.
    async fn output_insert(
        &self,
        run: i64,
        step: &str,
        stream: &str,
        bytes: &[u8],
    ) -> Op<(), Self::Fail>;

    /// Stores a running run's steps so far, if its fence holds.
    async fn set_progress(&self, lease: Lease, json: &str) -> Op<(), Self::Fail>;

    /// Ends a running run whose fence holds; gives its incident's
    /// [`RunContext`] (with the run in its new state) too.
    async fn end_run(
        &self,
        lease: Lease,
        state: RunState,
        result: &str,
        reason: &str,
    ) -> Op<Option<(EndedRun, RunContext)>, Self::Fail>;

    /// [`Driver::start_unnoted`] (with the lease's fence), then
    /// [`Driver::end_run`]: a run's end, with its start when that was not
    /// noted yet (read before the end clears its owner). PostgreSQL: one
    /// statement when the run ends, so no end can be executed before the
    /// read of its start.
    async fn end_run_and_start(
        &self,
        lease: Lease,
        state: RunState,
        result: &str,
        reason: &str,
    ) -> Op<EndAndStart, Self::Fail> {
        let start = self.start_unnoted(lease.run_id, Some(lease.fence)).await?;
        let end = self.end_run(lease, state, result, reason).await?;
        Ok((start, end))
    }

    /// Pauses a running run whose fence holds and whose cancellation was
    /// not requested.
    async fn await_approval(
        &self,
        lease: Lease,
        result: &str,
        reason: &str,
    ) -> Op<Option<EndedRun>, Self::Fail>;

    /// Removes the live output of runs that ended longer than
    /// `LIVE_TAIL` ago.
    async fn prune_output(&self) -> Op<(), Self::Fail>;

    /// The running runs (whose lease expired, with `expired`), by
    /// incident, then id; nothing is locked (see [`Driver::running_run`]).
    async fn running(&self, expired: bool) -> Op<Vec<RunningRun>, Self::Fail>;

    /// Run `run` as [`Driver::running`] would list it now, if it would,
    /// its row locked; `None` once its owner ended it, renewed its lease
    /// (with `expired`) or another reaper took it, and while its row is
    /// held (its owner's heartbeat or output: a later pass reaps it), so
    /// that a reaper holding its incident never waits for a run.
    async fn running_run(&self, run: i64, expired: bool) -> Op<Option<RunningRun>, Self::Fail>;

    /// The live output stored of a run: step, stream, bytes.
    async fn run_output(&self, run: i64) -> Op<Vec<(String, String, Vec<u8>)>, Self::Fail>;

    async fn drop_output(&self, run: i64) -> Op<(), Self::Fail>;

    /// Queues a taken run again, its fence moved on.
    async fn requeue(&self, run: i64) -> Op<(), Self::Fail>;

    /// Ends a taken run (its fence moved on), keeping its stored result
    /// when `result` is `None`.
    async fn end_taken(
        &self,
        run: i64,
        state: RunState,
        reason: &str,
        result: Option<&str>,
    ) -> Op<(), Self::Fail>;

    /// A run to cancel; locks it.
    async fn run_to_cancel(&self, run: i64) -> Op<Option<RunToCancel>, Self::Fail>;

    /// Ends a queued or waiting run `cancelled`.
    async fn cancel_waiting(&self, run: i64, reason: &str) -> Op<(), Self::Fail>;

    /// Asks a running run's owner to stop it.
    async fn request_cancel(&self, run: i64) -> Op<(), Self::Fail>;

    /// The incident's status; `None` when there is no such incident. Locks
    /// its row.
    async fn status(&self, incident: i64) -> Op<Option<IncidentStatus>, Self::Fail>;

    async fn set_root_cause(&self, incident: i64, text: &str) -> Op<(), Self::Fail>;

    /// A person sets the status: `resolved_at` keeps its first stamp while
    /// resolved and is cleared (with `alerts_ended_at`) when reopened.
    async fn set_status_by_hand(&self, incident: i64, status: IncidentStatus)
        -> Op<(), Self::Fail>;
}

/// A run whose end (or pause) was just recorded.
#[derive(Debug)]
pub(super) struct EndedRun {
    pub incident: i64,
    pub runbook: String,
    pub phase: Phase,
    pub notification: i64,
    pub fingerprint: String,
}

/// A remediation run in progress: its id, its incident and its state.
pub(super) type RemediationInProgress = (i64, i64, RunState);

/// What a claim reads first: the running runs of each runbook, and the
/// queue's first page (id and runbook, oldest first).
pub(super) type ClaimView = (Vec<(String, u32)>, Vec<(i64, String)>);

/// [`Driver::end_run_and_start`]'s: the start to note, if it was not noted
/// yet, and the end, if the fence held.
pub(super) type EndAndStart = (
    Option<(UnnotedStart, RunContext)>,
    Option<(EndedRun, RunContext)>,
);

/// A running run found by reaping.
#[derive(Debug)]
pub(super) struct RunningRun {
    pub id: i64,
    pub incident: i64,
    pub runbook: String,
    /// `idempotent: true`: [`crate::lifecycle::taken`] decides with
    /// `cancel_requested` whether it is queued again.
    pub idempotent: bool,
    pub owner: Option<String>,
    pub attempt: u32,
    pub cancel_requested: bool,
    pub fingerprint: String,
    pub phase: Phase,
    /// Its steps so far, if it stored any.
    pub progress: Option<String>,
    pub started: Option<DateTime<Utc>>,
    /// When its owner last renewed its lease.
    pub heard: Option<DateTime<Utc>>,
}

/// A run as cancelling it needs it.
#[derive(Debug)]
pub(super) struct RunToCancel {
    pub state: RunState,
    pub incident: i64,
    pub runbook: String,
    pub phase: Phase,
}

/// The open incident of a group, as ingest merges into it.
#[derive(Debug)]
pub(super) struct OpenIncident {
    pub id: i64,
    /// As stored: a severity name, and JSON lists.
    pub severity: String,
    pub services: String,
    pub runbooks: String,
}

/// A taken run whose start is to be noted on its incident.
#[derive(Debug)]
pub(super) struct UnnotedStart {
    pub incident: i64,
    pub runbook: String,
    pub phase: Phase,
    pub fingerprint: String,
    pub notification: i64,
    /// The replica that took it.
    pub owner: String,
    pub attempt: u32,
    /// It resumes after an approval.
    pub resumed: bool,
}

/// A run just claimed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Taken {
    pub fence: i64,
    pub attempt: u32,
    /// It paused on an approval and was decided: it resumes.
    pub resumed: bool,
}

/// What a run's start or end consults of its incident.
#[derive(Debug)]
pub(super) struct RunContext {
    pub now: crate::lifecycle::Incident,
    /// Its notification rules (JSON) and whether it is a shadow incident.
    pub policies: (String, bool),
    /// The states of its current remediation runs.
    pub remediation: Vec<RunState>,
}

/// A claimed run with its notification and incident.
#[derive(Debug)]
pub(super) struct ClaimedRun {
    pub incident: i64,
    pub runbook: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub phase: Phase,
    pub body: Vec<u8>,
    pub severity: Severity,
    pub shadow: bool,
    pub rerun_of: Option<i64>,
}
