//! Drills (game days): a runbook's `drills:` run it on a cron schedule with
//! a synthetic alert, recorded as a drill (receiver `runbookd-drill`).
//!
//! Every replica watches the schedules; each occurrence is claimed in the
//! store (one row per runbook, drill and scheduled time), so it runs once
//! across replicas. Occurrences missed while no runbookd ran are not caught
//! up. `mode: plan` records the plan and executes nothing; a drill pages
//! nobody unless it says `notify: true`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::runbook::{Drill, DrillMode, Runbook, RunbookSet};
use crate::store::Store;

/// The receiver of drills' incidents.
pub const DRILL_RECEIVER: &str = "runbookd-drill";

/// How often schedules are looked at (a drill may start this much late).
const TICK: Duration = Duration::from_millis(500);

pub struct Drills {
    pub store: Store,
    pub runbooks: Arc<RwLock<Arc<RunbookSet>>>,
    pub dispatcher: Arc<Dispatcher>,
    /// This replica's name, recorded as the claimer of an occurrence.
    pub owner: String,
    pub max_queued: Arc<AtomicU64>,
    /// Shadow mode: every drill is recorded as a plan.
    pub shadow: bool,
    pub external_url: String,
}

impl Drills {
    /// Watches the schedules until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let started = Utc::now();
        // The latest occurrence handled per (runbook, drill).
        let mut seen: HashMap<(String, usize), DateTime<Utc>> = HashMap::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let set = self
                .runbooks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            // Whole seconds: an occurrence is the same instant at every tick
            // and on every replica.
            let now = Utc::now();
            let now = now.with_nanosecond(0).unwrap_or(now);
            for rb in set.iter() {
                for (i, drill) in rb.drills.iter().enumerate() {
                    let Ok(due) = drill.cron.find_previous_occurrence(&now, true) else {
                        continue;
                    };
                    let key = (rb.name.clone(), i);
                    if due <= seen.get(&key).copied().unwrap_or(started) {
                        continue;
                    }
                    seen.insert(key, due);
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    match self
                        .store
                        .claim_drill(rb.name.clone(), index, due, self.owner.clone())
                        .await
                    {
                        Ok(true) => self.start(rb, drill, due).await,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(runbook = %rb.name, error = %e, "cannot claim a drill; it is skipped this time");
                        }
                    }
                }
            }
        }
    }

    async fn start(&self, rb: &Arc<Runbook>, drill: &Drill, due: DateTime<Utc>) {
        let made = crate::dispatch::manual_notification(
            DRILL_RECEIVER,
            &rb.name,
            drill.labels.clone(),
            &drill.annotations,
            &self.external_url,
        );
        let (n, body) = match made {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(runbook = %rb.name, error = %e, "cannot start a drill");
                return;
            }
        };
        let plan_only = self.shadow || drill.mode == DrillMode::Plan;
        let ingested = crate::dispatch::ingest_manual(
            &self.store,
            rb,
            n,
            body,
            self.max_queued.load(Ordering::Relaxed),
            plan_only,
            drill.notify,
        )
        .await;
        let ingested = match ingested {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(runbook = %rb.name, error = %e, "cannot record a drill");
                return;
            }
        };
        if let Some(incident) = ingested.incident {
            let note = format!(
                "drill of `{}` ({} mode, schedule `{}`, due {})",
                rb.name,
                if plan_only { "plan" } else { "execute" },
                drill.schedule,
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let update = crate::incident::Update {
                author: "runbookd".into(),
                message: note,
                status: None,
                root_cause: None,
            };
            if let Err(e) = self.store.add_update(incident, update).await {
                tracing::warn!(incident = %incident, error = %e, "cannot note a drill on its incident");
            }
            tracing::info!(runbook = %rb.name, incident = %incident, mode = drill.mode.as_str(), "drill started");
        }
        if !ingested.queued.is_empty() {
            self.dispatcher.wake();
        }
    }
}
