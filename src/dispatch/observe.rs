//! What a running run tells the store as it goes: its steps so far, its
//! live output, the silences it makes, whether its lease still holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{first_step_of, Held, LIVE_OUTPUT_PER_STEP};
use crate::exec::run::RunObserver;
use crate::exec::Stream;
use crate::metrics::Metrics;
use crate::plan::StepPlan;
use crate::record::StepRecord;
use crate::store::{Claimed, Lease, Store};

/// Streams a run's output into the store while it runs, in batches.
pub(super) struct StoreObserver {
    store: Store,
    lease: Lease,
    /// For the log lines of failed steps.
    incident: String,
    runbook: String,
    metrics: Arc<Metrics>,
    pending: Mutex<Vec<(String, &'static str, Vec<u8>)>>,
    stored: Mutex<HashMap<String, usize>>,
    pub(super) done: CancellationToken,
    /// On a shared store: the run's lease and how long it may go unrenewed;
    /// no step starts past that (after a pause, before the heartbeat notices).
    held: Option<(Held, Duration)>,
    /// When the alert of a first remediation run began firing (taken
    /// once, at its first step, for the alert-to-first-step latency).
    first_step_of: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// The steps so far and the one running, and whether the store has
    /// seen them yet: stored with the output, so that a run taken over
    /// keeps them.
    progress: Mutex<(crate::record::Progress, bool)>,
}

impl StoreObserver {
    pub(super) fn new(
        store: Store,
        c: &Claimed,
        metrics: Arc<Metrics>,
        held: Option<(Held, Duration)>,
    ) -> Self {
        StoreObserver {
            store,
            lease: c.lease,
            incident: c.incident.to_string(),
            runbook: c.runbook.clone(),
            metrics,
            pending: Mutex::new(Vec::new()),
            stored: Mutex::new(HashMap::new()),
            done: CancellationToken::new(),
            held,
            first_step_of: Mutex::new(first_step_of(c)),
            progress: Mutex::new((
                crate::record::Progress {
                    steps: c
                        .resume
                        .as_ref()
                        .map(|r| r.prior.steps.clone())
                        .unwrap_or_default(),
                    running: None,
                },
                false,
            )),
        }
    }

    /// Stores the output and steps gathered since the last flush. The last
    /// flush, when the run ended, stores only output: the run's end, written
    /// next, records every step (one write fewer per run). A run this
    /// replica no longer holds (its lease lapsed) is recorded by the replica
    /// that takes it over, from its steps so far: they are stored then.
    pub(super) async fn flush(&self, last: bool) {
        let ends_here = last && !self.held.as_ref().is_some_and(|(h, _)| h.released());
        let chunks =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if !chunks.is_empty() {
            if let Err(e) = self.store.append_output(self.lease, chunks).await {
                tracing::warn!(run = self.lease.run_id, error = %e, "cannot store live output");
            }
        }
        let progress = {
            let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            let dirty = std::mem::replace(&mut p.1, false);
            (dirty && !ends_here).then(|| serde_json::to_string(&p.0))
        };
        match progress {
            Some(Ok(json)) => {
                if let Err(e) = self.store.progress(self.lease, json).await {
                    tracing::warn!(run = self.lease.run_id, error = %e, "cannot store the run's steps so far");
                }
            }
            Some(Err(e)) => {
                tracing::warn!(run = self.lease.run_id, error = %e, "cannot write the run's steps so far");
            }
            None => {}
        }
    }

    pub(super) async fn flush_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => self.flush(false).await,
                () = self.done.cancelled() => {
                    self.flush(true).await;
                    return;
                }
            }
        }
    }
}

impl RunObserver for StoreObserver {
    fn may_start(&self) -> bool {
        if let Some((held, fence_after)) = &self.held {
            if !held.released() && held.since_renewal() >= *fence_after {
                tracing::error!(
                    run = held.lease.run_id,
                    "lease not renewed in time: the next step does not start (fenced)"
                );
                held.release();
            }
            return !held.released();
        }
        true
    }

    fn step_started(&self, step: &StepPlan, attempt: u32, _attempts: u32) {
        self.metrics.running_steps.inc();
        {
            let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            p.0.running = Some(crate::record::RunningStep {
                plan: step.clone(),
                attempt,
                since: chrono::Utc::now(),
            });
            p.1 = true;
        }
        if let Some(fired) = self
            .first_step_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let waited = (chrono::Utc::now() - fired).to_std().unwrap_or_default();
            self.metrics
                .alert_to_first_step
                .observe(waited.as_secs_f64());
        }
    }

    fn output(&self, step: &str, stream: Stream, bytes: &[u8]) {
        let mut stored = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
        let so_far = stored.entry(step.to_owned()).or_default();
        let room = LIVE_OUTPUT_PER_STEP.saturating_sub(*so_far);
        if room == 0 {
            return;
        }
        let take = bytes.len().min(room);
        *so_far += take;
        let stream = if stream == Stream::Stdout {
            "stdout"
        } else {
            "stderr"
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((step.to_owned(), stream, bytes[..take].to_vec()));
    }

    fn silenced(
        &self,
        silence: crate::incident::RunSilence,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let id = silence.id.clone();
            if let Err(e) = self.store.record_silence(silence).await {
                tracing::warn!(run = self.lease.run_id, silence = %id, error = %e, "cannot record a run's silence: should runbookd die before the run ends, it ends only at its duration");
            }
        })
    }

    fn step_finished(&self, rec: &StepRecord) {
        {
            let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            p.0.steps.push(rec.clone());
            p.0.running = None;
            p.1 = true;
        }
        if rec.attempts.is_empty() {
            if let Some(o) = &rec.outcome {
                Metrics::count_for(&self.metrics.steps, &self.runbook, o.status());
            }
            return;
        }
        let attempts = rec.attempts.len();
        for (n, a) in rec.attempts.iter().enumerate() {
            if a.outcome.is_failure() {
                let outcome = serde_json::to_string(&a.outcome).unwrap_or_default();
                tracing::warn!(
                    incident = %self.incident,
                    run = self.lease.run_id,
                    runbook = %self.runbook,
                    step = %rec.name,
                    attempt = n + 1,
                    attempts,
                    status = a.outcome.status(),
                    outcome = %outcome,
                    "step failed"
                );
            }
            self.metrics.running_steps.dec();
            Metrics::count_for(&self.metrics.steps, &self.runbook, a.outcome.status());
            self.metrics
                .step_duration
                .get_or_create(&crate::metrics::Outcome {
                    outcome: a.outcome.status().to_owned(),
                })
                .observe(Duration::from_millis(a.duration_ms).as_secs_f64());
        }
    }
}
