//! Drills (game days): a runbook's `drills:` run it on a cron schedule with
//! a synthetic alert, recorded as a drill (receiver `runbookd-drill`).
//!
//! Every replica watches the schedules; each occurrence is claimed in the
//! store (one row per runbook, drill and scheduled time), so it runs once
//! across replicas. Occurrences missed while no runbookd ran are not caught
//! up. `mode: plan` records the plan and executes nothing; a drill pages
//! nobody unless it says `notify: true`.
//!
//! A drill is a chaos experiment run only when it is safe: its `requires:`
//! (its service's gate says yes, budget above a share, no open incident,
//! allowed days and hours) is checked before each occurrence, and a refused
//! occurrence records its plan and why, running nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use tokio_util::sync::CancellationToken;

pub use crate::alert::{DRILL_LABEL, DRILL_RECEIVER};
use crate::dispatch::Dispatcher;
use crate::runbook::{Drill, DrillMode, Runbook, RunbookSet};
use crate::store::Store;

/// How often schedules are looked at (a drill may start this much late).
const TICK: Duration = Duration::from_millis(500);

pub struct Drills {
    pub store: Store,
    pub runbooks: Arc<RwLock<Arc<RunbookSet>>>,
    pub dispatcher: Arc<Dispatcher>,
    /// This replica's name, recorded as the claimer of an occurrence.
    pub owner: String,
    /// What time it is: when schedules come due, and the days and hours
    /// `requires:` checks.
    pub clock: crate::clock::SharedClock,
    pub max_queued: Arc<AtomicU64>,
    /// Shadow mode: every drill is recorded as a plan.
    pub shadow: bool,
    pub external_url: String,
    /// What `requires:` asks: the services' gates, the SLOs and their
    /// statuses (`None` without SLO files: a drill that requires a budget
    /// is refused).
    pub budgets: Option<Budgets>,
}

/// Where a drill's `requires:` reads budgets.
#[derive(Clone)]
pub struct Budgets {
    pub gates: crate::exec::run::GateSource,
    pub slos: crate::exec::run::SloSource,
    pub statuses: crate::slo::refresh::Shared,
}

impl Drills {
    /// Watches the schedules until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        // The latest occurrence handled per drill (by what the drill is, not
        // where it stands in its list: a reload that adds, removes or
        // changes a drill never re-runs or misfires another).
        let mut seen: HashMap<String, DateTime<Utc>> = HashMap::new();
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
            let now = self.clock.now();
            let now = now.with_nanosecond(0).unwrap_or(now);
            for rb in set.iter() {
                for drill in &rb.drills {
                    let Ok(due) = drill.cron.find_previous_occurrence(&now, true) else {
                        continue;
                    };
                    let key = drill.identity(&rb.name);
                    // A drill seen for the first time (at start, or added by
                    // a reload) waits for its next occurrence.
                    let Some(last) = seen.get(&key).copied() else {
                        seen.insert(key, due);
                        continue;
                    };
                    if due <= last {
                        continue;
                    }
                    seen.insert(key.clone(), due);
                    match self
                        .store
                        .claim_drill(rb.name.clone(), key, due, self.owner.clone())
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
        // A distinct label: a drill's alert is never taken for a real one
        // (fingerprints, cancel_on_resolved, runs in progress).
        let mut labels = drill.labels.clone();
        labels.insert(
            "runbookd_origin".into(),
            format!("drill {}", due.timestamp()),
        );
        // Which drill it is, for its safeguards while it runs.
        if !drill.safeguards.is_empty() {
            labels.insert(DRILL_LABEL.into(), drill.identity(&rb.name));
        }
        let made = crate::dispatch::manual_notification(
            DRILL_RECEIVER,
            &rb.name,
            labels,
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
        let refused = match &drill.requires {
            Some(r) => self.refusal(r, due).await,
            None => None,
        };
        if let Some(why) = &refused {
            tracing::warn!(runbook = %rb.name, due = %due, reason = %why, "drill refused: its plan is recorded, nothing runs");
        }
        let plan_only = self.shadow || drill.mode == DrillMode::Plan || refused.is_some();
        let mut note = format!(
            "drill of `{}` ({} mode, schedule `{}`, due {})",
            rb.name,
            if self.shadow || drill.mode == DrillMode::Plan {
                "plan"
            } else {
                "execute"
            },
            drill.schedule,
            due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(why) = &refused {
            note = format!("{note} refused, its plan recorded and nothing run: {why}");
        }
        let note = crate::incident::Update {
            author: "runbookd".into(),
            message: note,
            status: None,
            root_cause: None,
        };
        let ingested = self
            .dispatcher
            .run_manually(
                rb,
                (n, body),
                self.max_queued.load(Ordering::Relaxed),
                (plan_only, drill.notify),
                note,
            )
            .await;
        match ingested {
            Ok(i) => {
                if let Some(incident) = i.incident {
                    tracing::info!(runbook = %rb.name, incident = %incident, mode = drill.mode.as_str(), "drill started");
                }
            }
            Err(e) => {
                tracing::error!(runbook = %rb.name, due = %due, error = %e, "cannot record a drill: this occurrence is skipped");
            }
        }
    }
}

impl Drills {
    /// Why the drill may not run at `due`, by its `requires:` (`None`: it
    /// may). What cannot be known refuses it.
    async fn refusal(
        &self,
        r: &crate::runbook::DrillRequires,
        due: DateTime<Utc>,
    ) -> Option<String> {
        let mut why = Vec::new();
        if !r.days.is_empty() && !r.days.contains(&due.weekday()) {
            let days: Vec<String> = r
                .days
                .iter()
                .map(|d| d.to_string().to_lowercase())
                .collect();
            why.push(format!(
                "it is {} (UTC), and it runs on {}",
                due.weekday().to_string().to_lowercase(),
                days.join(", ")
            ));
        }
        if let Some((from, to)) = r.hours {
            let now = due.hour() * 60 + due.minute();
            if !(from..to).contains(&now) {
                let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
                why.push(format!(
                    "it is {} UTC, outside {}-{}",
                    hm(now),
                    hm(from),
                    hm(to)
                ));
            }
        }
        match &self.budgets {
            None => why.push(format!(
                "this runbookd has no SLO statuses, so `{}`'s budget and gate are unknown",
                r.service
            )),
            Some(b) => {
                if let Some(g) = (b.gates)(&r.service).filter(|g| !g.allowed) {
                    why.push(format!(
                        "`{}` is frozen by its error-budget policies: {}",
                        r.service,
                        g.reasons.join("; ")
                    ));
                }
                if let Some(share) = r.budget_above {
                    why.extend(budget_short(b, &r.service, share));
                }
            }
        }
        if r.no_open_incident {
            let open = self
                .store
                .incidents(crate::store::IncidentFilter {
                    status: Some(crate::incident::StatusFilter::Open),
                    limit: Some(500),
                    ..crate::store::IncidentFilter::default()
                })
                .await;
            match open {
                Ok((list, _)) => {
                    let ids: Vec<String> = list
                        .iter()
                        .filter(|i| !i.drill && i.services.contains(&r.service))
                        .map(|i| i.id.to_string())
                        .collect();
                    if !ids.is_empty() {
                        why.push(format!(
                            "`{}` has open incidents: {}",
                            r.service,
                            ids.join(", ")
                        ));
                    }
                }
                Err(e) => why.push(format!(
                    "cannot tell whether `{}` has open incidents: {e}",
                    r.service
                )),
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Each SLO of `service` whose budget left is not above `share`, or not
/// known, said; none is said for each when the service has no SLO.
fn budget_short(b: &Budgets, service: &str, share: f64) -> Vec<String> {
    let set = b
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let snap = b
        .statuses
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .statuses
        .clone();
    let own: Vec<&crate::slo::Slo> = set.iter().filter(|s| s.service == service).collect();
    if own.is_empty() {
        return vec![format!(
            "no SLO of `{service}` is defined, so its budget is unknown"
        )];
    }
    own.iter()
        .filter_map(|slo| {
            let left = snap
                .iter()
                .find(|st| st.service == slo.service && st.slo == slo.name && !st.stale)
                .and_then(|st| st.remaining);
            match left {
                Some(x) if x > share => None,
                Some(x) => Some(format!(
                    "{}/{} has {:.1}% of its budget left, not above {:.1}%",
                    slo.service,
                    slo.name,
                    x * 100.0,
                    share * 100.0
                )),
                None => Some(format!(
                    "{}/{}'s budget is not known (not read from Prometheus, or stale)",
                    slo.service, slo.name
                )),
            }
        })
        .collect()
}
