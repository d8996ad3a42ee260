//! `POST /webhook`: Alertmanager's webhook (version 4). Answers 200 only
//! after the notification (raw body kept), its incident and its queued runs
//! are committed; 400 for a bad payload; 401 without valid credentials; 413
//! over the body limit; 503 with `Retry-After` when the run queue is full or
//! the store fails, so that Alertmanager retries.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{read_body, ApiError, AppState};
use crate::alert::Notification;
use crate::metrics::{AlertStatus, Metrics};

pub fn router() -> Router<AppState> {
    Router::new().route("/webhook", post(webhook).layer(DefaultBodyLimit::disable()))
}

async fn webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let outcome = accept(&s, &headers, body).await;
    let label = match &outcome {
        Ok(_) => "accepted",
        Err(ApiError::Unauthorized | ApiError::WebhookUnauthorized(_)) => "unauthorized",
        Err(ApiError::PayloadTooLarge(_)) => "too_large",
        Err(ApiError::QueueFull) => "queue_full",
        Err(ApiError::Unavailable) => "store_error",
        Err(ApiError::UnsupportedMediaType(_) | ApiError::CrossSite(_)) => "refused",
        Err(_) => "invalid",
    };
    Metrics::count(&s.metrics.notifications, label);
    if let Err(e) = &outcome {
        tracing::warn!(
            status = e.status_code().as_u16(),
            // Debug: the reason can quote the payload, newlines included.
            reason = ?e.to_string(),
            "webhook refused"
        );
    }
    outcome
}

async fn accept(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    if !super::auth::webhook_authorized(&s.auth(), headers) {
        return Err(ApiError::WebhookUnauthorized(s.auth().webhook_hint.clone()));
    }
    super::require_json(headers)?;
    let bytes = read_body(body, s.body_limit, s.http.request_timeout).await?;
    let n = Notification::from_json(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid Alertmanager payload: {e}")))?;
    if [super::runs::MANUAL_RECEIVER, crate::alert::DRILL_RECEIVER].contains(&n.receiver.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "receiver `{}` is runbookd's own (manual runs and drills); name the Alertmanager receiver otherwise",
            n.receiver
        )));
    }
    ingest(s, n, bytes.to_vec()).await.map(Json)
}

/// Records a notification as the webhook does (one transaction: its
/// incident, alerts and queued runs), wakes the runs it queued and stops
/// those it cancelled: the webhook's path, and the silence keeper's for a
/// silenced alert's resolution learnt from Alertmanager's API.
///
/// # Errors
/// A full queue or a store error.
pub async fn ingest(s: &AppState, n: Notification, bytes: Vec<u8>) -> Result<Value, ApiError> {
    for a in &n.alerts {
        s.metrics
            .alerts
            .get_or_create(&AlertStatus {
                status: a.status.to_string(),
            })
            .inc();
    }
    let alerts = n.alerts.len();
    let run_rate = *s
        .run_rate
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ingested = s
        .dispatcher
        .accept(
            n,
            bytes,
            s.max_queued_runs.load(std::sync::atomic::Ordering::Relaxed),
            run_rate,
        )
        .await?;
    tracing::info!(
        notification = ingested.notification_id,
        incident = ingested
            .incident
            .map(|i| i.to_string())
            .as_deref()
            .unwrap_or("none"),
        alerts,
        queued_runs = ingested.queued.len(),
        duplicate_runs = ingested.duplicates,
        skipped_runs = ingested.skipped,
        "webhook accepted"
    );
    Ok(json!({
        "status": "accepted",
        "notification": ingested.notification_id,
        "incident": ingested.incident.map(|i| i.to_string()),
        "alerts": alerts,
        "queued_runs": ingested.queued.len(),
        "duplicate_runs": ingested.duplicates,
        "skipped_runs": ingested.skipped,
        "shadow": s.shadow,
    }))
}
