//! notification → incidents → queued runs → executor.
//!
//! The webhook records a notification and its queued runs in one store
//! transaction ([`Dispatcher::accept`]); the dispatcher claims queued runs from the store
//! (oldest first, each runbook under its `concurrency`, all under the global
//! cap of concurrent steps), executes them, streams their output into the
//! store while they run, and records the result. Claims live in the database,
//! so a restart finds queued runs and starts them; runs that were executing
//! are marked `interrupted` (or queued again, `idempotent: true`).
//!
//! Each claimed run has a lease in the store that this replica renews by
//! heartbeat. A replica that cannot renew in time fences itself: it stops
//! its steps before its lease can expire, so that another replica taking
//! the run over never runs beside it; and every write of the run names its
//! fence, so a stale owner (a paused process, say) writes nothing.

mod accept;
mod observe;

use accept::is_drill;
pub use accept::manual_notification;
use observe::StoreObserver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Notification;
use crate::exec::run::{Executor, RunRequest};
use crate::incident::{RunDetail, RunState};
use crate::metrics::Metrics;
use crate::plan::{IncidentRef, Plan};
use crate::record::{RunOutcome, RunResult, StepOutcome};
use crate::runbook::RunbookSet;
use crate::store::{ClaimRequest, Claimed, FinishOutcome, Finished, Lease, Reap, Sharing, Store};

/// The current runbook set; replaced whole on reload.
pub type Runbooks = Arc<RwLock<Arc<RunbookSet>>>;

/// Live output kept in the store per step while it runs (the final record
/// keeps head and tail of everything).
const LIVE_OUTPUT_PER_STEP: usize = 256 << 10;

/// How long a run runs before its owner notes its start on its incident
/// (its timeline entry, status change, `run_started` notifications). A run
/// that ends sooner has its start noted by its end's transaction.
const NOTE_START_AFTER: Duration = Duration::from_millis(200);

/// Who this replica is to the store, and how long its claims hold.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Recorded as the owner of the runs it claims (`host:pid:random`).
    pub name: String,
    /// A claim's lease; renewed every third of it.
    pub lease: Duration,
    /// Steps are stopped this long before an unrenewed lease would expire
    /// (at least the kill grace, so they are dead by then).
    pub fence_margin: Duration,
    /// Runs all replicas together may run at once.
    pub cluster_max: u32,
}

/// A run this replica executes: its lease, its stop switch, and when its
/// lease was last renewed by this replica's clock (taken before the request
/// that renewed it, so never later than the store's own renewal).
#[derive(Clone)]
pub(super) struct Held {
    lease: Lease,
    cancel: CancellationToken,
    renewed: Arc<Mutex<std::time::Instant>>,
    /// The lease was lost, or could not be renewed in time: the run's end is
    /// not this replica's to record (whoever takes it over records it).
    released: Arc<std::sync::atomic::AtomicBool>,
    /// Its steps are done and only its record is left: it no longer takes
    /// one of this replica's slots, but its lease is renewed until then.
    ending: Arc<std::sync::atomic::AtomicBool>,
}

impl Held {
    fn new(lease: Lease, asked: std::time::Instant) -> Held {
        Held {
            lease,
            cancel: CancellationToken::new(),
            renewed: Arc::new(Mutex::new(asked)),
            released: Arc::default(),
            ending: Arc::default(),
        }
    }

    /// Whether the run takes one of this replica's slots (its steps run).
    fn executing(&self) -> bool {
        !self.ending.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn since_renewal(&self) -> Duration {
        self.renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the run's steps and leaves its record to the store's takeover.
    fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// Executes queued runs.
pub struct Dispatcher {
    pub store: Store,
    pub executor: Arc<Executor>,
    pub runbooks: Runbooks,
    pub metrics: Arc<Metrics>,
    pub max_running: u32,
    /// Shadow mode: record plans, execute nothing.
    pub shadow: bool,
    pub replica: Replica,
    wake: Notify,
    running: Mutex<HashMap<i64, Held>>,
    /// Cancellations asked for runs not registered yet (SQLite: a resolved
    /// notification committed together with the run's claim).
    early_cancels: Mutex<std::collections::HashSet<i64>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Cancelled when the claim loop has returned: no run starts after it.
    claiming_done: CancellationToken,
    /// A run ended since the old live output was last pruned.
    prune_due: std::sync::atomic::AtomicBool,
}

/// When the alert of a run's first remediation began firing: `None` for a
/// resumed or taken-over run, a resolution, a manual run or a drill (whose
/// alerts runbookd made itself).
pub(super) fn first_step_of(c: &Claimed) -> Option<chrono::DateTime<chrono::Utc>> {
    if c.phase != crate::plan::Phase::Remediation || c.resume.is_some() || c.attempt > 1 || c.shadow
    {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&c.body).ok()?;
    if v["receiver"]
        .as_str()
        .is_some_and(|r| r.starts_with("runbookd-"))
    {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(&c.starts_at)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

impl Dispatcher {
    #[must_use]
    pub fn new(
        store: Store,
        executor: Arc<Executor>,
        runbooks: Runbooks,
        metrics: Arc<Metrics>,
        max_running: u32,
        shadow: bool,
        replica: Replica,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            executor,
            runbooks,
            metrics,
            max_running,
            shadow,
            replica,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            early_cancels: Mutex::new(std::collections::HashSet::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            claiming_done: CancellationToken::new(),
            prune_due: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// New runs were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Cancels running runs of this replica (their alert resolved,
    /// `cancel_on_resolved`); runs of other replicas learn it from the
    /// store at their next heartbeat.
    pub fn cancel(&self, ids: &[i64]) {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if let Some(h) = running.get(id) {
                h.cancel.cancel();
            } else if self.store.sharing() == Sharing::Exclusive {
                // Every running run of a SQLite store is this process's:
                // this one is being registered right now.
                self.early_cancels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(*id);
            }
        }
    }

    /// Claims and starts runs until [`Dispatcher::shutdown`]; renews the
    /// leases of the runs it executes; reaps expired leases when it leads.
    pub async fn run(self: Arc<Self>) {
        let _done = self.claiming_done.clone().drop_guard();
        let gauges = self.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                gauges.refresh_gauges().await;
                gauges.prune_output().await;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => {}
                }
            }
        });
        // One process holds a SQLite store: nobody can take its runs over,
        // so leases need no renewal and nothing is reaped while it runs.
        if self.store.sharing() == Sharing::Shared {
            tokio::spawn(self.clone().heartbeats());
            tokio::spawn(self.clone().duties());
        }
        loop {
            loop {
                let concurrency: HashMap<String, u32> = self
                    .runbooks
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|r| (r.name.clone(), r.concurrency))
                    .collect();
                let busy = u32::try_from(
                    self.running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values()
                        .filter(|h| h.executing())
                        .count(),
                )
                .unwrap_or(u32::MAX);
                let free = self.max_running.saturating_sub(busy);
                if free == 0 || self.stop.is_cancelled() {
                    break;
                }
                let asked = std::time::Instant::now();
                let req = ClaimRequest {
                    owner: self.replica.name.clone(),
                    concurrency,
                    free,
                    cluster_max: self.replica.cluster_max,
                    lease: self.replica.lease,
                };
                match self.store.claim(req).await {
                    Ok(claimed) if claimed.is_empty() => break,
                    Ok(claimed) => {
                        for c in claimed {
                            // Registered before the next claim counts this
                            // replica's free slots.
                            let held = Held::new(c.lease, asked);
                            self.running
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(c.lease.run_id, held.clone());
                            if self
                                .early_cancels
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&c.lease.run_id)
                            {
                                held.cancel.cancel();
                            }
                            let this = self.clone();
                            self.tasks.spawn(async move { this.execute(c, held).await });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim queued runs");
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.store.queued_elsewhere() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Renews this replica's leases whenever one is due: at most half of
    /// `lease − margin` (and a third of the lease) after its last renewal,
    /// each lease by its own clock, whatever the loop saw before it slept
    /// (a run claimed meanwhile is due by its claim). A run whose lease has
    /// not been renewed for `lease − margin` is stopped at that moment:
    /// renewals failed (the store is unreachable or slow) or this process
    /// was paused, so another replica may take the run over once the lease
    /// expires, and its steps must be dead by then. Its end is left to that
    /// takeover.
    async fn heartbeats(self: Arc<Self>) {
        let lease = self.replica.lease;
        let fence_after = lease.saturating_sub(self.replica.fence_margin);
        let renew_after = (fence_after / 2).min(lease / 3);
        // Leases are renewed until the last run ends after a shutdown.
        let ended = async {
            self.stop.cancelled().await;
            self.tasks.wait().await;
        };
        let mut ended = std::pin::pin!(ended);
        loop {
            // Who holds what now (never a snapshot from before a sleep).
            let held: Vec<Held> = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter(|h| !h.released())
                .cloned()
                .collect();
            // Overdue: renewals failed, or this process was paused (after a
            // SIGSTOP nothing may act on runs it may no longer hold).
            let mut live = Vec::new();
            for h in held {
                let since = h.since_renewal();
                if since >= fence_after {
                    tracing::error!(
                        run = h.lease.run_id,
                        unrenewed_for = ?since,
                        "lease not renewed in time: stopping the run's steps (fenced); the run is taken over after its lease"
                    );
                    self.metrics.fenced_runs.inc();
                    h.release();
                } else {
                    live.push(h);
                }
            }
            if live.iter().any(|h| h.since_renewal() >= renew_after) {
                self.renew(&live, fence_after).await;
            }
            // Sleep until the next lease is due (or `renew_after` when none
            // is held: a run claimed meanwhile is due no sooner).
            let wait = live
                .iter()
                .filter(|h| !h.released())
                .map(|h| renew_after.saturating_sub(h.since_renewal()))
                .min()
                .unwrap_or(renew_after)
                .max(Duration::from_millis(10));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut ended => return,
            }
        }
    }

    /// One heartbeat for `live`: the leases renewed are stamped with when it
    /// was asked; lost ones are released; cancellations asked elsewhere
    /// reach their runs. It waits no longer than the first lease could
    /// still be renewed in time.
    async fn renew(&self, live: &[Held], fence_after: Duration) {
        let asked = std::time::Instant::now();
        let patience = live
            .iter()
            .map(|h| fence_after.saturating_sub(h.since_renewal()))
            .min()
            .unwrap_or(fence_after);
        let beat = tokio::time::timeout(
            patience,
            self.store.heartbeat(
                self.replica.name.clone(),
                live.iter().map(|h| h.lease).collect(),
                self.replica.lease,
            ),
        )
        .await;
        match beat {
            Ok(Ok(beat)) => {
                let running: std::collections::HashSet<i64> = self
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .copied()
                    .collect();
                for h in live {
                    let id = h.lease.run_id;
                    if !running.contains(&id) {
                        // It ended (and was recorded) meanwhile.
                        continue;
                    }
                    if beat.lost.contains(&id) {
                        tracing::warn!(
                            run = id,
                            "the run was taken over by another replica: stopping its steps"
                        );
                        self.metrics.fenced_runs.inc();
                        h.release();
                        continue;
                    }
                    *h.renewed.lock().unwrap_or_else(PoisonError::into_inner) = asked;
                    if beat.cancel.contains(&id) {
                        h.cancel.cancel();
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew the leases of running runs");
            }
            Err(_) => tracing::warn!("renewing the leases of running runs timed out"),
        }
    }

    /// Periodic duties of the replica holding the leader lease: runs whose
    /// owner stopped renewing are taken over.
    async fn duties(self: Arc<Self>) {
        let every = (self.replica.lease / 2).max(Duration::from_millis(100));
        while !self.stop.is_cancelled() {
            match self
                .store
                .lead(self.replica.name.clone(), self.replica.lease)
                .await
            {
                Ok(true) => match self.store.reap(Reap::Expired).await {
                    Ok(r) if r.interrupted + r.requeued > 0 => {
                        self.metrics.leader.set(1);
                        tracing::warn!(
                            interrupted = r.interrupted,
                            requeued = r.requeued,
                            "took over runs whose replica stopped renewing its lease"
                        );
                        self.metrics
                            .takeovers
                            .inc_by(u64::try_from(r.interrupted + r.requeued).unwrap_or(0));
                        self.wake();
                    }
                    Ok(_) => {
                        self.metrics.leader.set(1);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reap expired leases"),
                },
                Ok(false) => {
                    self.metrics.leader.set(0);
                }
                Err(e) => tracing::debug!(error = %e, "cannot take the leader lease"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    /// Prunes old runs' live output, when a run ended since the last time
    /// (once a second at most: not a statement at each run's end).
    async fn prune_output(&self) {
        use std::sync::atomic::Ordering;
        if !self.prune_due.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.store.prune_output().await {
            self.prune_due.store(true, Ordering::Relaxed);
            tracing::debug!(error = %e, "cannot prune old runs' live output");
        }
    }

    /// Keeps the queue, incident and approval gauges current, once a
    /// second; while approvals wait, decides those whose deadline passed
    /// (by their `on_timeout`). Every replica looks; the store gives each
    /// approval to one.
    async fn refresh_gauges(&self) {
        let Ok(g) = self.store.gauges().await else {
            return;
        };
        let awaiting = g.awaiting;
        self.metrics.awaiting_approval.set(awaiting);
        self.metrics.queue_depth.set(g.queued);
        self.metrics.open_incidents.set(g.open);
        self.metrics.outbox_backlog.set(g.outbox_backlog);
        self.metrics.outbox_dead.set(g.outbox_dead);
        if awaiting == 0 || !matches!(self.store.approvals_due().await, Ok(true)) {
            return;
        }
        match self.store.expire_approvals().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    approvals = n,
                    "approvals reached their deadline: their runs go on as on_timeout says"
                );
                self.wake();
            }
            Err(e) => tracing::warn!(error = %e, "cannot decide approvals whose deadline passed"),
        }
    }

    /// Stops claiming, lets running steps finish within `grace`, then kills
    /// them; runs stopped this way are recorded `interrupted`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        // A claim in flight when the stop came still starts its runs: wait
        // for it, so that they are waited for (and stopped) below too.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.claiming_done.cancelled()).await;
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?grace, "runs still going after the shutdown grace period: stopping them");
            for h in self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
            {
                h.cancel.cancel();
            }
            self.tasks.wait().await;
        }
    }

    async fn execute(self: Arc<Self>, c: Claimed, held: Held) {
        tracing::info!(
            incident = %c.incident,
            run = c.lease.run_id,
            runbook = %c.runbook,
            fingerprint = %c.fingerprint,
            phase = %c.phase,
            attempt = c.attempt,
            "run started"
        );
        // Its start is noted once it ran for a moment; a shorter run has it
        // noted by its end, in the end's transaction (one transaction, not
        // two).
        // A note still under way when the run ends is dropped: the end
        // notes the start unless the note got in first.
        let run = self.execute_claimed(&c, &held);
        tokio::pin!(run);
        let finished = tokio::select! {
            biased;
            f = &mut run => f,
            () = tokio::time::sleep(NOTE_START_AFTER) => {
                let note = async {
                    if let Err(e) = self.store.note_start(c.lease).await {
                        tracing::warn!(run = c.lease.run_id, error = %e, "cannot note the start of a run: its end notes it");
                    }
                };
                tokio::pin!(note);
                tokio::select! {
                    biased;
                    f = &mut run => f,
                    () = &mut note => run.await,
                }
            }
        };
        if let Some(a) = &finished.awaiting {
            tracing::info!(incident = %c.incident, run = c.lease.run_id, runbook = %c.runbook, step = %a.step, "run waits for approval");
            self.record(&held, finished).await;
            self.free(c.lease.run_id);
            return;
        }
        if held.released() {
            // Fenced: its end is the takeover's to record and count.
            tracing::warn!(incident = %c.incident, run = c.lease.run_id, runbook = %c.runbook, "run stopped here (fenced): the replica that takes it over records its end");
        } else {
            if matches!(finished.state, RunState::Succeeded | RunState::Planned) {
                tracing::info!(incident = %c.incident, run = c.lease.run_id, runbook = %c.runbook, state = %finished.state, summary = ?finished.summary, "run ended");
            } else {
                tracing::warn!(incident = %c.incident, run = c.lease.run_id, runbook = %c.runbook, state = %finished.state, summary = ?finished.summary, "run ended");
            }
            Metrics::count_for(&self.metrics.runs, &c.runbook, finished.state.as_str());
        }
        // The run's silences (any made before a pause included) are
        // expired by the silence keeper, which finds the run ended.
        let recorded = !held.released();
        self.record(&held, finished).await;
        self.free(c.lease.run_id);
        if recorded && is_drill(&c.body) {
            self.close_drill(&c).await;
        }
    }

    /// A drill's incident closes when its run ends: a drill is practice,
    /// and nobody is to resolve it by hand.
    async fn close_drill(&self, c: &Claimed) {
        let update = crate::incident::Update {
            author: "runbookd".into(),
            message: format!(
                "the drill's run of `{}` ended: its incident is closed",
                c.runbook
            ),
            status: Some(crate::incident::IncidentStatus::Resolved),
            root_cause: None,
        };
        if let Err(e) = self.store.add_update(c.incident, update).await {
            tracing::warn!(incident = %c.incident, error = %e, "cannot close a drill's incident");
        }
    }

    /// The run no longer takes one of this replica's slots.
    fn free(&self, run: i64) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&run);
        self.early_cancels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&run);
        self.wake();
    }

    /// Records a run's end while its lease holds: retried when the store
    /// fails (the fence makes a retry safe), given up once the lease may
    /// have expired (the takeover records it then).
    async fn record(&self, held: &Held, finished: Finished) {
        let run = held.lease.run_id;
        if held.released() {
            tracing::warn!(run, "this replica no longer holds the run: its end is recorded by the replica that takes it over");
            return;
        }
        let exclusive = self.store.sharing() == Sharing::Exclusive;
        // Its steps are done: the slot is free before the record is written,
        // so that the next claim runs alongside (SQLite: shares its group
        // commit, since SQLite queues a write when it is asked for). A
        // shared store keeps renewing the lease until the record is in; the
        // run counts as running in the store (the cluster's cap, its
        // runbook's concurrency) until then.
        // Shared by the retries: a run's record can be large.
        let finished = Arc::new(finished);
        let mut pending = self.store.finish(finished.clone());
        if exclusive {
            self.free(run);
        } else {
            held.ending.store(true, std::sync::atomic::Ordering::SeqCst);
            self.wake();
        }
        let give_up = self.replica.lease.saturating_sub(self.replica.fence_margin);
        let mut pause = Duration::from_millis(100);
        loop {
            match pending.await {
                Ok(FinishOutcome::Recorded) => {
                    self.prune_due
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Ok(FinishOutcome::Fenced) => {
                    tracing::warn!(run, fence = held.lease.fence, "the run was taken over while this replica ran it: its end is not recorded here");
                    return;
                }
                // One process holds a SQLite store: nobody else will record
                // this run, so keep trying (a full disk, say) until stopped;
                // a restart marks it interrupted otherwise.
                Err(e) if exclusive && !self.stop.is_cancelled() => {
                    tracing::warn!(run, error = %e, "cannot record the end of a run yet; retrying");
                }
                Err(e) if !exclusive && held.since_renewal() < give_up => {
                    tracing::warn!(run, error = %e, "cannot record the end of a run yet; retrying");
                }
                Err(e) => {
                    tracing::error!(run, error = %e, "cannot record the end of a run; it is taken over after its lease (or marked interrupted at the next start)");
                    return;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            pending = self.store.finish(finished.clone());
        }
    }

    async fn execute_claimed(&self, c: &Claimed, held: &Held) -> Finished {
        let cancel = &held.cancel;
        let fail = |summary: String| Finished {
            lease: c.lease,
            state: RunState::Failed,
            summary,
            // A resumed run keeps the record of the steps it ran.
            result: c
                .resume
                .as_ref()
                .map(|r| RunDetail::Executed(r.prior.clone())),
            awaiting: None,
        };
        let n = match Notification::from_json(&c.body) {
            Ok(n) => n,
            Err(e) => return fail(format!("the stored notification no longer parses: {e}")),
        };
        let Some(alert) = n
            .alerts
            .iter()
            .find(|a| a.fingerprint == c.fingerprint && a.starts_at.to_string() == c.starts_at)
        else {
            return fail(format!(
                "alert {} is not in its notification",
                c.fingerprint
            ));
        };
        let set = self
            .runbooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(rb) = set.get(&c.runbook) else {
            return fail(format!(
                "runbook `{}` no longer exists (removed by a reload)",
                c.runbook
            ));
        };
        let incident = IncidentRef {
            id: c.incident.to_string(),
            severity: c.severity,
        };
        if self.shadow || c.shadow {
            return shadow_plan(c, &n, rb, &incident);
        }
        let req = RunRequest {
            notification: &n,
            alert,
            runbook: rb,
            incident,
            lease: Some(c.lease),
            resume: c.resume.as_ref(),
            rerun_of: c.rerun_of,
        };
        let observer = Arc::new(StoreObserver::new(
            self.store.clone(),
            c,
            self.metrics.clone(),
            (self.store.sharing() == Sharing::Shared).then(|| {
                (
                    held.clone(),
                    self.replica.lease.saturating_sub(self.replica.fence_margin),
                )
            }),
        ));
        let flusher = tokio::spawn(observer.clone().flush_loop());
        let result = self.executor.run(&req, observer.clone(), cancel).await;
        observer.done.cancel();
        let _ = flusher.await;
        let shutting_down = self.stop.is_cancelled();
        let state = match result.outcome {
            RunOutcome::Cancelled if shutting_down => RunState::Interrupted,
            RunOutcome::Interrupted => RunState::Interrupted,
            RunOutcome::Succeeded => RunState::Succeeded,
            RunOutcome::SucceededWithFailures => RunState::SucceededWithFailures,
            RunOutcome::Failed => RunState::Failed,
            RunOutcome::TimedOut => RunState::TimedOut,
            RunOutcome::Cancelled => RunState::Cancelled,
            RunOutcome::AwaitingApproval => RunState::AwaitingApproval,
            RunOutcome::Skipped => RunState::Skipped,
        };
        if state != RunState::AwaitingApproval {
            self.metrics
                .run_duration
                .get_or_create(&crate::metrics::Outcome {
                    outcome: state.as_str().to_owned(),
                })
                .observe(Duration::from_millis(result.duration_ms).as_secs_f64());
        }
        let summary = summarize(&result, shutting_down);
        Finished {
            lease: c.lease,
            state,
            summary,
            awaiting: result.awaiting.clone(),
            result: Some(RunDetail::Executed(Box::new(result))),
        }
    }
}

/// Shadow mode: the exact plan, recorded instead of executed.
fn shadow_plan(
    c: &Claimed,
    n: &Notification,
    rb: &Arc<crate::runbook::Runbook>,
    incident: &IncidentRef,
) -> Finished {
    // The run's own runbook, whatever its matchers (a manual run or a drill
    // runs the runbook it names).
    let plan = Plan::manual(n, rb, &incident.id);
    let run = plan
        .alerts
        .iter()
        .filter(|a| a.fingerprint == c.fingerprint)
        .flat_map(|a| a.runs.iter())
        .find(|r| r.runbook == c.runbook);
    let steps = run.map_or(0, |r| r.steps.len());
    Finished {
        lease: c.lease,
        state: RunState::Planned,
        summary: format!("shadow mode: {steps} step(s) would run; nothing was executed"),
        result: Some(RunDetail::Planned {
            shadow: true,
            plan: run.cloned().map(Box::new),
        }),
        awaiting: None,
    }
}

fn summarize(r: &RunResult, shutting_down: bool) -> String {
    let mut failed: Vec<String> = r
        .steps
        .iter()
        .filter_map(|s| match &s.outcome {
            Some(StepOutcome::Succeeded | StepOutcome::Skipped { .. }) | None => None,
            Some(o) => Some(format!("`{}` {}", s.name, o.status().replace('_', " "))),
        })
        .collect();
    if shutting_down && r.outcome == RunOutcome::Cancelled {
        failed.push("stopped by runbookd shutting down".into());
    }
    let checklist = if r.checklist.is_empty() {
        String::new()
    } else {
        format!(", {} checklist item(s) open", r.checklist.len())
    };
    if let Some(why) = &r.held {
        return format!("not run: {why}");
    }
    if let Some(why) = &r.aborted {
        return format!(
            "drill aborted: {why}; {} step(s) in {} ms{}{checklist}",
            r.steps.len(),
            r.duration_ms,
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.join(", "))
            }
        );
    }
    if failed.is_empty() {
        format!(
            "{} step(s) in {} ms{checklist}",
            r.steps.len(),
            r.duration_ms
        )
    } else {
        format!(
            "{} step(s) in {} ms: {}{checklist}",
            r.steps.len(),
            r.duration_ms,
            failed.join(", ")
        )
    }
}
