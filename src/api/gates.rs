//! `GET /api/v1/gates/{service}`: may risky changes to a service go ahead
//! now? 200 `{"allowed": true, …}`, or 423 Locked `{"allowed": false,
//! "reasons": […], …}` while an error-budget policy freezes it: Flagger's
//! webhooks and Chaos Mesh's status checks read the code, Argo Rollouts'
//! web metric the JSON (`{$.allowed}`). Answered from the last SLO refresh,
//! never waiting for Prometheus; every replica answers alike.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/gates/{service}", get(gate))
}

/// The gate of `service`, or 404 when no SLO names it.
///
/// # Errors
/// An unknown service.
pub fn gate_of(s: &AppState, service: &str) -> Result<crate::slo::policy::Gate, ApiError> {
    source(s.slos.clone(), s.slo_status.clone(), s.prometheus.is_some())(service)
        .ok_or_else(|| ApiError::NotFound(format!("service `{service}` (no SLO names it)")))
}

/// Gates from the loaded SLO files (a reload replaces them) and the shared
/// statuses: what the API answers and what gated steps ask.
#[must_use]
pub fn source(
    slos: std::sync::Arc<std::sync::RwLock<std::sync::Arc<crate::slo::SloSet>>>,
    statuses: crate::slo::refresh::Shared,
    prometheus: bool,
) -> crate::exec::run::GateSource {
    std::sync::Arc::new(move |service: &str| {
        let set = slos
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let list = super::slos::statuses_of(&set, &statuses, prometheus);
        set.gate(service, &list, chrono::Utc::now())
    })
}

async fn gate(
    State(s): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let g = gate_of(&s, &service)?;
    let code = if g.allowed {
        StatusCode::OK
    } else {
        StatusCode::LOCKED
    };
    Ok((code, Json(g)).into_response())
}
