//! `GET /api/v1/gates/{service}`: may risky changes to a service go ahead
//! now? 200 `{"allowed": true, …}`, or 423 Locked `{"allowed": false,
//! "reasons": […], …}` while an error-budget policy freezes it: Flagger's
//! webhooks and Chaos Mesh's status checks read the code, Argo Rollouts'
//! web metric the JSON (`{$.allowed}`). Answered from the last SLO refresh,
//! never waiting for Prometheus; every replica answers alike.
//!
//! `POST /api/v1/gates/{service}/override` (operator): the gate says yes for
//! a while whatever the policies say, recorded with who and why;
//! `DELETE` ends it early.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::{ApiError, AppState};

/// The longest an override may last: a freeze forgotten under an override
/// would let every deploy and chaos experiment through.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(7 * 86_400);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/gates/{service}", get(gate))
        .route(
            "/api/v1/gates/{service}/override",
            post(override_gate).delete(end_override),
        )
}

/// An override's request.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    /// Why (required).
    #[serde(default)]
    reason: String,
    /// How long: `30m`, `2h`, `1d` (required; at most 7 days).
    #[serde(default, rename = "for")]
    duration: String,
    /// Who, when the server has no users (as other writes).
    #[serde(default)]
    author: String,
}

/// Overrides the gate of `service`: 200 with the gate as it now answers.
async fn override_gate(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(service): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let b: OverrideBody = super::optional_json(&s, &headers, body, 16 << 10, "override").await?;
    let by = super::notifications::who(&actor, &b.author)?;
    gate_of(&s, &service)?;
    let reason = b.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`reason` must say why, in 1 to 2000 characters without control characters".into(),
        ));
    }
    let length = crate::duration::parse(b.duration.trim()).map_err(|e| {
        ApiError::BadRequest(format!(
            "`for` must be how long the override lasts, e.g. `2h` (at most 7d): {e}"
        ))
    })?;
    if length.is_zero() || length > MAX_OVERRIDE {
        return Err(ApiError::BadRequest(format!(
            "`for: {}`: an override lasts more than 0 and at most 7d",
            b.duration.trim()
        )));
    }
    let since = chrono::Utc::now();
    let until = since
        + chrono::Duration::from_std(length)
            .map_err(|e| ApiError::BadRequest(format!("`for`: {e}")))?;
    let o = s
        .store
        .override_gate(crate::store::GateOverride {
            service: service.clone(),
            by,
            reason: reason.to_owned(),
            since,
            until,
        })
        .await?;
    tracing::warn!(service = %o.service, by = %o.by, until = %o.until, reason = %o.reason, "error-budget gate overridden");
    crate::slo::refresh::sync_overrides(&s.store, &s.slo_status).await;
    Ok(answer(gate_of(&s, &service)?))
}

/// Ends the override of `service`: 200 with the gate as it now answers,
/// 404 when none is in force.
async fn end_override(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(service): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let b: super::Author = super::optional_json(&s, &headers, body, 16 << 10, "request").await?;
    let by = super::notifications::who(&actor, &b.author)?;
    gate_of(&s, &service)?;
    if !s.store.end_override(service.clone(), by.clone()).await? {
        return Err(ApiError::NotFound(format!(
            "an override of `{service}`'s gate in force"
        )));
    }
    tracing::warn!(service = %service, by = %by, "error-budget gate override ended");
    crate::slo::refresh::sync_overrides(&s.store, &s.slo_status).await;
    Ok(answer(gate_of(&s, &service)?))
}

/// 200 when allowed, 423 Locked when not, with the gate as JSON.
fn answer(g: crate::slo::policy::Gate) -> Response {
    let code = if g.allowed {
        StatusCode::OK
    } else {
        StatusCode::LOCKED
    };
    (code, Json(g)).into_response()
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
        let overrides = statuses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .overrides
            .clone();
        set.gate(service, &list, &overrides, chrono::Utc::now())
    })
}

/// The gate, with the service's timeline (freezes and overrides, newest
/// first).
async fn gate(
    State(s): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let g = gate_of(&s, &service)?;
    // Best effort: the verdict never waits on the store.
    let timeline = match s.store.service_timeline(service.clone(), 20).await {
        Ok(t) => serde_json::to_value(t).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(service = %service, error = %e, "cannot read a service's timeline; the gate answers without it");
            Value::Null
        }
    };
    let code = if g.allowed {
        StatusCode::OK
    } else {
        StatusCode::LOCKED
    };
    let mut v = serde_json::to_value(&g).unwrap_or_default();
    v["timeline"] = timeline;
    Ok((code, Json(v)).into_response())
}
