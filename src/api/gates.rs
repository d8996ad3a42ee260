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
    let set = s
        .slos
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let statuses = super::slos::statuses(s);
    set.gate(service, &statuses, chrono::Utc::now())
        .ok_or_else(|| ApiError::NotFound(format!("service `{service}` (no SLO names it)")))
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
