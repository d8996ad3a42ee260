//! `GET /api/v1/forecasts` (every forecast's series, soonest full first;
//! `?service=` narrows) and `GET /api/v1/forecasts/{service}/{name}` (one,
//! with its definition and the history read), served from the last
//! background read: these never wait for Prometheus.

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::capacity::{Forecast, Projection};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/forecasts", get(list))
        .route("/api/v1/forecasts/{service}/{name}", get(detail))
}

/// The projections shown for `f`: the last read's, or why there are none.
fn projections_of(s: &AppState, f: &Forecast) -> Vec<Projection> {
    let snap = s
        .forecasts
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mine: Vec<Projection> = snap
        .projections
        .iter()
        .filter(|p| p.service == f.service && p.forecast == f.name)
        .cloned()
        .collect();
    if !mine.is_empty() {
        return mine;
    }
    let why = if s.prometheus.is_none() {
        "no `prometheus:` in the config: runbookd cannot read this forecast's history"
    } else {
        "not read from Prometheus yet"
    };
    vec![Projection::failed(f, why.into(), chrono::Utc::now())]
}

/// Every forecast's series, soonest full first (those of `service` only,
/// when given).
pub fn all(s: &AppState, service: Option<&str>) -> Vec<Projection> {
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut list: Vec<Projection> = set
        .forecasts()
        .filter(|f| service.is_none_or(|x| x == f.service))
        .flat_map(|f| projections_of(s, f))
        .collect();
    crate::capacity::sort(&mut list);
    list
}

/// A forecast's definition, as the API and the UI show it.
#[must_use]
pub fn definition(f: &Forecast) -> Value {
    json!({
        "service": f.service,
        "name": f.name,
        "description": f.description,
        "usage": f.usage,
        "capacity": f.capacity.text(),
        "lookback": crate::slo::promql::duration(f.lookback),
        "horizon": crate::slo::promql::duration(f.horizon),
        "warn_within": crate::slo::promql::duration(f.warn_within),
        "step": crate::slo::promql::duration(f.step()),
        "labels": f.labels,
        "file": f.file.display().to_string(),
        "alert": crate::slo::rules::FORECAST_ALERT,
        "alert_labels": {"runbookd_forecast": f.id(), "service": f.service},
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    service: Option<String>,
}

async fn list(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = super::incidents::query(raw)?;
    let (at, took_ms) = {
        let snap = s
            .forecasts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (snap.at, snap.took_ms)
    };
    let list: Vec<Value> = all(&s, q.service.as_deref())
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("history");
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "prometheus": s.prometheus.as_ref().map(|p| p.url.to_string()),
        "refreshed_at": at,
        "refresh_took_ms": took_ms,
        "forecasts": list,
    })))
}

async fn detail(
    State(s): State<AppState>,
    Path((service, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let f = set
        .forecast(&service, &name)
        .ok_or_else(|| ApiError::NotFound(format!("forecast `{service}/{name}`")))?;
    Ok(Json(json!({
        "definition": definition(f),
        "series": projections_of(&s, f),
    })))
}
