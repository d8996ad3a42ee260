//! Reading every SLO's status, and keeping it fresh in the server: a
//! background task asks Prometheus every `prometheus.refresh`; a webhook
//! never waits for it, and a Prometheus that is down or slow leaves the
//! last numbers in place, marked stale with the error.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;

use super::status::{read, Status};
use super::SloSet;
use crate::prometheus::Prometheus;

/// At most this many SLOs are asked about at once: Prometheus usually
/// shares the machine's cores with the services it watches (and here with
/// runbookd's webhook), so a refresh is spread out rather than a burst
/// (docs/benchmarks.md).
pub const PARALLEL: usize = 2;

/// Every SLO of `set`, in the set's order: those the rules' recordings
/// cover from one batch of queries for all ([`super::status::read_many`]).
pub async fn read_all(prom: &Prometheus, set: &SloSet, now: DateTime<Utc>) -> Vec<Status> {
    read_all_with(prom, set, now, PARALLEL).await
}

/// As [`read_all`], the SLOs read alone `parallel` at a time.
pub async fn read_all_with(
    prom: &Prometheus,
    set: &SloSet,
    now: DateTime<Utc>,
    parallel: usize,
) -> Vec<Status> {
    let slos: Vec<&super::Slo> = set.iter().collect();
    super::status::read_many(prom, &slos, now, parallel).await
}

/// Every SLO alone (ten queries each), `parallel` at a time: what
/// [`read_all`] did before it batched (kept for the benchmark's
/// comparison).
pub async fn read_each(
    prom: &Prometheus,
    set: &SloSet,
    now: DateTime<Utc>,
    parallel: usize,
) -> Vec<Status> {
    let reads: Vec<_> = set.iter().map(|slo| read(prom, slo, now)).collect();
    futures_util::stream::iter(reads)
        .buffered(parallel.max(1))
        .collect()
        .await
}

/// The statuses the server shows (empty until the first refresh).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub statuses: Vec<Status>,
    /// When the last refresh ended.
    pub at: Option<DateTime<Utc>>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// Operators' gate overrides in force, as the store holds them (read
    /// every refresh by every replica, and at once by the one that wrote).
    pub overrides: Vec<crate::store::GateOverride>,
}

/// Reads the gate overrides in force from the store into `into`.
pub async fn sync_overrides(store: &crate::store::Store, into: &Shared) {
    match store.gate_overrides().await {
        Ok(o) => {
            into.write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .overrides = o;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the gate overrides: the last ones read stay in force until they expire");
        }
    }
}

pub type Shared = Arc<RwLock<Snapshot>>;

/// Merges a refresh into the previous snapshot: an SLO whose check failed
/// keeps its last numbers, marked stale with the error.
#[must_use]
pub fn merge(previous: &[Status], fresh: Vec<Status>) -> Vec<Status> {
    let before: std::collections::HashMap<(&str, &str), &Status> = previous
        .iter()
        .map(|p| ((p.service.as_str(), p.slo.as_str()), p))
        .collect();
    fresh
        .into_iter()
        .map(|s| {
            let was = before.get(&(s.service.as_str(), s.slo.as_str())).copied();
            match (&s.error, was) {
                (Some(e), Some(p)) if p.error.is_none() || p.stale => {
                    let mut kept = p.clone();
                    kept.error = Some(e.clone());
                    kept.stale = true;
                    kept
                }
                _ => s,
            }
        })
        .collect()
}

/// Records what each recently resolved incident cost its services' SLOs
/// (at most `BUDGETS_PER_TICK` a tick, each once across replicas): the
/// figures, whether it is SLO-affecting, and a timeline note. An incident
/// whose services have no SLO is recorded as such (its severity decides).
/// One whose figures Prometheus cannot give now is tried again.
pub async fn record_budgets(store: &crate::store::Store, prom: &Prometheus, set: &SloSet) {
    let since = Utc::now() - chrono::Duration::days(BUDGET_WINDOW_DAYS);
    let due = match store.slo_budget_due(since, BUDGETS_PER_TICK).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the incidents whose SLO budget is due");
            return;
        }
    };
    for inc in due {
        let (budget, affecting, note, required) = if super::impact::of_services(set, &inc.services)
            .next()
            .is_none()
        {
            ("[]".to_owned(), None, None, None)
        } else {
            let from = inc.created_at.instant();
            let Some(to) = inc.alerts_ended_at.or(inc.resolved_at) else {
                // Not resolved after all: nothing to ask about.
                let _ = store
                    .record_slo_budget(inc.id, "[]".into(), None, None, None)
                    .await;
                continue;
            };
            let to = to.instant();
            let spent = super::impact::consumed(prom, set, &inc.services, from, to).await;
            if let Some(e) = spent.iter().find_map(|c| c.error.clone()) {
                // Tried again for a while; then recorded with the error, so
                // that one incident never holds back the others.
                let given_up = inc.resolved_at.is_none_or(|r| {
                    Utc::now() - r.instant() > chrono::Duration::hours(GIVE_UP_HOURS)
                });
                if !given_up {
                    tracing::debug!(incident = %inc.id, error = %e, "cannot read an incident's SLO budget yet");
                    continue;
                }
                let _ = store
                    .record_slo_budget(
                        inc.id,
                        serde_json::to_string(&spent).unwrap_or_else(|_| "[]".into()),
                        None,
                        Some(format!("SLO budget could not be read from Prometheus: {e}")),
                        required(set, &spent),
                    )
                    .await;
                continue;
            }
            let affecting = spent.iter().any(|c| c.share.is_some_and(|s| s > 0.0));
            let said: Vec<String> = spent
                .iter()
                .map(|c| match (c.minutes, c.share) {
                    (Some(m), Some(s)) => format!(
                        "{}/{}: {m:.1} min ({:.1}% of the period's)",
                        c.service,
                        c.slo,
                        s * 100.0
                    ),
                    _ => format!("{}/{}: no events", c.service, c.slo),
                })
                .collect();
            (
                serde_json::to_string(&spent).unwrap_or_else(|_| "[]".into()),
                Some(affecting),
                Some(format!("SLO budget spent: {}", said.join("; "))),
                required(set, &spent),
            )
        };
        if let Err(e) = store
            .record_slo_budget(inc.id, budget, affecting, note, required)
            .await
        {
            tracing::warn!(incident = %inc.id, error = %e, "cannot record an incident's SLO budget");
        }
    }
}

/// What the policies over an incident's cost require of it, given what it
/// spent (`None`: no postmortem required).
fn required(
    set: &SloSet,
    spent: &[super::impact::Consumed],
) -> Option<crate::store::PostmortemRequired> {
    // No events during the incident spent nothing; only a share that
    // could not be read is unknown.
    let shares: Vec<(&str, &str, Option<f64>)> = spent
        .iter()
        .map(|c| {
            let share = c.share.or(c.error.is_none().then_some(0.0));
            (c.service.as_str(), c.slo.as_str(), share)
        })
        .collect();
    let verdict = super::policy::on_incident(set.policies(), &shares);
    verdict.postmortem.then(|| {
        let mut reason = verdict.reasons.join("; ");
        for r in &verdict.recommendations {
            reason.push_str(". Recommended: ");
            reason.push_str(r.trim_end_matches('.'));
        }
        crate::store::PostmortemRequired {
            reason,
            notify: verdict.notify,
            services: verdict.services,
        }
    })
}

/// Incidents resolved this many days ago or less get their budget recorded.
const BUDGET_WINDOW_DAYS: i64 = 31;
const BUDGETS_PER_TICK: u32 = 20;
/// An incident whose figures Prometheus still cannot give this long after
/// it resolved is recorded with the error.
const GIVE_UP_HOURS: i64 = 6;

/// The replica a refresh runs on: only the holder of the store's leader
/// lease asks Prometheus; every replica shows what it stored.
pub struct Replica {
    pub store: crate::store::Store,
    pub name: String,
    pub lease: std::time::Duration,
}

/// Shows the statuses the leader stored (another replica's read).
async fn follow(store: &crate::store::Store, into: &Shared) {
    let (rows, at, took_ms) = match store.slo_statuses().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the SLO statuses the leader stored");
            return;
        }
    };
    let statuses: Vec<Status> = rows
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let mut snap = into
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    snap.statuses = statuses;
    snap.at = at.as_deref().and_then(|t| {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    });
    snap.took_ms = u64::try_from(took_ms).unwrap_or(0);
}

/// Refreshes `into` from `prom` every `every`, for the SLOs `slos` holds
/// then (a reload changes them), until `stop`. With a `replica`, only the
/// leader asks Prometheus and stores what it read for the others, and it
/// records what resolved incidents cost; every replica reads the gate
/// overrides (with or without Prometheus).
pub async fn run(
    prom: Option<Prometheus>,
    slos: Arc<RwLock<Arc<SloSet>>>,
    into: Shared,
    replica: Option<Replica>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Some(r) = &replica {
            sync_overrides(&r.store, &into).await;
        }
        if let Some(prom) = &prom {
            refresh(prom, &slos, &into, replica.as_ref(), &stop).await;
        } else if replica.is_none() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One refresh of the statuses (see [`run`]).
async fn refresh(
    prom: &Prometheus,
    slos: &RwLock<Arc<SloSet>>,
    into: &Shared,
    replica: Option<&Replica>,
    stop: &tokio_util::sync::CancellationToken,
) {
    let set = slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let leading = match replica {
        None => true,
        Some(r) => r.store.lead(r.name.clone(), r.lease).await.unwrap_or(false),
    };
    if !leading {
        if let Some(r) = replica {
            follow(&r.store, into).await;
        }
        return;
    }
    if set.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let fresh = tokio::select! {
        s = read_all(prom, &set, Utc::now()) => s,
        () = stop.cancelled() => return,
    };
    let failed = fresh.iter().filter(|s| s.error.is_some()).count();
    if failed > 0 {
        let first = fresh
            .iter()
            .find_map(|s| s.error.clone())
            .unwrap_or_default();
        tracing::warn!(failed, error = %first, "cannot read the status of some SLOs from Prometheus: their last numbers are shown, marked stale");
    }
    let (statuses, at, took_ms) = {
        let mut snap = into
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        snap.statuses = merge(&snap.statuses, fresh);
        snap.at = Some(Utc::now());
        snap.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        (
            snap.statuses.clone(),
            snap.at.unwrap_or_else(Utc::now),
            snap.took_ms,
        )
    };
    if let Some(r) = replica {
        if r.store.shared() {
            share(&r.store, &statuses, at, took_ms).await;
        }
        // Each change of a service's freeze, written once with its reasons
        // and told to the policies' notifiers.
        for f in set.freezes(&statuses, at) {
            let (service, frozen) = (f.service.clone(), f.frozen);
            match r.store.decide_freeze(f).await {
                Ok(true) => {
                    tracing::warn!(service = %service, frozen, "error-budget freeze changed");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(service = %service, error = %e, "cannot record a service's error-budget freeze; tried again at the next refresh");
                }
            }
        }
        tokio::select! {
            () = record_budgets(&r.store, prom, &set) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Stores what the leader read for the other replicas.
async fn share(store: &crate::store::Store, statuses: &[Status], at: DateTime<Utc>, took_ms: u64) {
    let rows = statuses
        .iter()
        .map(|s| {
            (
                format!("{}-{}", s.service, s.slo),
                serde_json::to_string(s).unwrap_or_default(),
            )
        })
        .collect();
    if let Err(e) = store
        .put_slo_statuses(rows, at, i64::try_from(took_ms).unwrap_or(i64::MAX))
        .await
    {
        tracing::warn!(error = %e, "cannot store the SLO statuses for the other replicas");
    }
}

/// `3d 4h`, `2h 5m`, `40s`: how long until something, for people.
#[must_use]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn human(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 1.0 {
        return "now".into();
    }
    let s = seconds as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
