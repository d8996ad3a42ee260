//! `GET /api/v1/slos` (every SLO, least budget left first) and `GET
//! /api/v1/slos/{service}/{slo}` (one, with its definition, burn-rate
//! tiers and the service's incidents), served from the last background
//! refresh: these never wait for Prometheus. (An open incident's live
//! budget figures and an SLO page's chart do, 3 s at most.)

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::slo::status::{State as SloState, Status};
use crate::slo::{Sli, Slo};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/slos", get(list))
        .route("/api/v1/slos/{service}/{slo}", get(detail))
}

/// The status shown for `slo`: the last refresh's, or why there is none.
fn status_of(s: &AppState, slo: &Slo) -> Status {
    status_in(&s.slo_status, s.prometheus.is_some(), slo)
}

/// The status of `slo` in the refreshed `shared` statuses, or why there is
/// none (`prometheus`: whether the config names one).
fn status_in(shared: &crate::slo::refresh::Shared, prometheus: bool, slo: &Slo) -> Status {
    let snap = shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(st) = snap
        .statuses
        .iter()
        .find(|st| st.service == slo.service && st.slo == slo.name)
    {
        return st.clone();
    }
    drop(snap);
    let why = if prometheus {
        "not read from Prometheus yet"
    } else {
        "no `prometheus:` in the config: runbookd cannot read this SLO's budget"
    };
    Status {
        service: slo.service.clone(),
        slo: slo.name.clone(),
        description: slo.description.clone(),
        objective: slo.objective,
        period: slo.period.to_string(),
        period_start: crate::slo::status::period_start(slo.period, chrono::Utc::now()),
        sli: None,
        error_ratio: None,
        events: None,
        errors: None,
        budget_minutes: slo.budget_minutes(),
        remaining: None,
        remaining_minutes: None,
        tiers: Vec::new(),
        exhaustion_seconds: None,
        state: SloState::Unknown,
        latency: None,
        source: None,
        checked_at: chrono::Utc::now(),
        error: Some(why.into()),
        stale: false,
    }
}

/// Every SLO's status, least budget left first (unknown last).
pub fn statuses(s: &AppState) -> Vec<Status> {
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    statuses_of(&set, &s.slo_status, s.prometheus.is_some())
}

/// Every SLO of `set` with its status from `shared`, least budget left
/// first (unknown last).
pub fn statuses_of(
    set: &crate::slo::SloSet,
    shared: &crate::slo::refresh::Shared,
    prometheus: bool,
) -> Vec<Status> {
    let mut list: Vec<Status> = set
        .iter()
        .map(|slo| status_in(shared, prometheus, slo))
        .collect();
    list.sort_by(|a, b| {
        let key = |s: &Status| s.remaining.unwrap_or(f64::INFINITY);
        key(a)
            .total_cmp(&key(b))
            .then_with(|| (&a.service, &a.slo).cmp(&(&b.service, &b.slo)))
    });
    list
}

async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snap = s
        .slo_status
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Json(json!({
        "prometheus": s.prometheus.as_ref().map(|p| p.url.to_string()),
        "refreshed_at": snap.at,
        "refresh_took_ms": snap.took_ms,
        "slos": statuses(&s),
    })))
}

/// One SLO, as shown.
pub struct One {
    pub status: Status,
    pub definition: Value,
    /// The service's incidents, newest first.
    pub incidents: Vec<crate::incident::IncidentSummary>,
}

impl One {
    fn to_json(&self) -> Value {
        json!({"status": self.status, "definition": self.definition, "incidents": self.incidents})
    }
}

/// One SLO: its definition, status and the service's incidents.
///
/// # Errors
/// An SLO that does not exist (404).
pub async fn one(s: &AppState, service: &str, name: &str) -> Result<One, ApiError> {
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let slo = set
        .get(service, name)
        .ok_or_else(|| ApiError::NotFound(format!("SLO `{service}/{name}`")))?;
    let status = status_of(s, slo);
    let (recent, _) = s
        .store
        .incidents(crate::store::IncidentFilter {
            limit: Some(500),
            ..Default::default()
        })
        .await?;
    let incidents: Vec<_> = recent
        .into_iter()
        .filter(|i| i.services.iter().any(|x| x == &slo.service))
        .take(50)
        .collect();
    let windows = crate::slo::rules::Windows::for_period(slo.period);
    let (sli_kind, queries) = match &slo.sli {
        Sli::Events { errors, total } => (
            "events",
            json!({"errors": errors.text(), "total": total.text()}),
        ),
        Sli::Ratio { error_ratio } => ("ratio", json!({"error_ratio": error_ratio.text()})),
    };
    Ok(One {
        status,
        definition: json!({
            "service": slo.service,
            "slo": slo.name,
            "description": slo.description,
            "objective": slo.objective,
            "period": slo.period.to_string(),
            "budget_minutes": slo.budget_minutes(),
            "sli": sli_kind,
            "queries": queries,
            "min_events": slo.min_events,
            "labels": slo.labels,
            "format": slo.source.format.as_str(),
            "file": slo.source.file.display().to_string(),
            "windows": {
                "page": windows.page.iter().map(|p| json!({"short": crate::slo::promql::duration(p.short), "long": crate::slo::promql::duration(p.long), "factor": p.factor})).collect::<Vec<_>>(),
                "ticket": windows.ticket.iter().map(|p| json!({"short": crate::slo::promql::duration(p.short), "long": crate::slo::promql::duration(p.long), "factor": p.factor})).collect::<Vec<_>>(),
            },
        }),
        incidents,
    })
}

async fn detail(
    State(s): State<AppState>,
    Path((service, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(one(&s, &service, &name).await?.to_json()))
}

/// What an incident cost its services' SLOs (opened → alerts ended, or
/// resolved, or now), and whether it is SLO-affecting: it spent budget,
/// or, when its services have no SLO, it is sev1 or sev2 (the guide's
/// `is_slo_affecting`). Bounded: Prometheus gets 3 seconds.
pub async fn incident_budget(
    s: &AppState,
    d: &crate::incident::IncidentDetail,
) -> (Vec<crate::slo::impact::Consumed>, bool) {
    let sum = &d.summary;
    let severe = sum.severity.affects_slos();
    // Recorded once it resolved: those figures, without asking again.
    if let Some(list) = sum
        .slo_budget
        .as_deref()
        .and_then(|j| serde_json::from_str::<Vec<crate::slo::impact::Consumed>>(j).ok())
    {
        return (list, sum.slo_affecting);
    }
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if crate::slo::impact::of_services(&set, &sum.services)
        .next()
        .is_none()
    {
        return (Vec::new(), severe);
    }
    let from = sum.created_at.instant();
    let to = sum
        .alerts_ended_at
        .or(sum.resolved_at)
        .map_or_else(chrono::Utc::now, crate::timestamp::Timestamp::instant);
    let Some(prom) = &s.prometheus else {
        return (Vec::new(), severe);
    };
    let read = crate::slo::impact::consumed(prom, &set, &sum.services, from, to);
    match tokio::time::timeout(std::time::Duration::from_secs(3), read).await {
        Ok(list) => {
            let spent = list.iter().any(|c| c.share.is_some_and(|x| x > 0.0));
            (list, spent)
        }
        Err(_) => (Vec::new(), severe),
    }
}
