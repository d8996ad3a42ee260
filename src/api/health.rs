//! Operations, as Alertmanager names them: `/-/healthy`, `/-/ready`,
//! `POST /-/reload` (an invalid runbook set is refused with its errors and
//! the old set kept), and `/metrics` in the Prometheus text format.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/-/healthy", get(|| async { "OK" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
}

/// Ready means a webhook would be acknowledged: the store answers and its
/// last commit succeeded.
async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    if let Some(e) = s.store.write_error() {
        tracing::warn!(error = %e, "not ready: the store cannot be written");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store cannot be written: {e}"),
        );
    }
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "OK".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer".to_owned(),
            )
        }
    }
}

/// Loads the runbook directory again; keeps the old set when the new one is invalid.
///
/// # Errors
/// Every error of the new set.
pub fn reload_runbooks(s: &AppState) -> Result<usize, ApiError> {
    let _one_at_a_time = s
        .reloading
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let loaded = crate::runbook::load_dir(&s.runbooks_dir).and_then(|set| {
        crate::notify::config::check_refs(&set, &s.notifiers)?;
        Ok(set)
    });
    // The sandbox hides the new set's secret files before any step of it
    // can run.
    let loaded = loaded.and_then(|set| {
        s.dispatcher
            .executor
            .sandbox
            .hide_secrets(&set.secret_files())
            .map_err(|e| {
                crate::runbook::LoadErrors(vec![crate::runbook::LoadError {
                    file: s.runbooks_dir.clone(),
                    pos: None,
                    runbook: None,
                    step: None,
                    message: format!("cannot hide the runbooks' secret files from steps: {e}"),
                    warning: false,
                }])
            })?;
        Ok(set)
    });
    match loaded {
        Ok(set) => {
            let n = set.len();
            *s.runbooks
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(set);
            s.metrics.reloaded(true);
            tracing::info!(runbooks = n, "runbooks reloaded");
            Ok(n)
        }
        Err(errors) => {
            s.metrics.reloaded(false);
            tracing::error!("reload refused, the previous runbooks stay in force:\n{errors}");
            Err(ApiError::Invalid {
                message: "invalid runbooks: the previous set stays in force".into(),
                errors: errors.0.iter().map(ToString::to_string).collect(),
            })
        }
    }
}

/// Reloads this replica's runbooks, then tells the other replicas of a
/// shared store to reload theirs.
///
/// # Errors
/// Every error of the new set (nothing is announced then).
pub async fn reload_everywhere(s: &AppState) -> Result<usize, ApiError> {
    let n = reload_runbooks(s)?;
    if let Err(e) = s
        .store
        .announce_reload(s.dispatcher.replica.name.clone())
        .await
    {
        tracing::warn!(error = %e, "reloaded here, but cannot tell the other replicas to reload");
    }
    Ok(n)
}

async fn reload(
    State(s): State<AppState>,
    ident: Option<axum::Extension<super::Identity>>,
) -> Result<Json<Value>, ApiError> {
    super::operator(ident.as_ref())?;
    let n = reload_everywhere(&s).await?;
    Ok(Json(json!({"status": "reloaded", "runbooks": n})))
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let format = crate::metrics::Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    (
        [(header::CONTENT_TYPE, format.content_type())],
        s.metrics.encode(format),
    )
}
