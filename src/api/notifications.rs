//! Operators' writes beyond updates: `POST /api/v1/incidents/{id}/acknowledge`,
//! `POST /api/v1/runs/{id}/cancel`, and notifications:
//! `GET /api/v1/notifications`, `POST /api/v1/notifications/{id}/retry`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::incidents::query;
use super::{ApiError, AppState};
use crate::incident::notices::MessageFilter;
use crate::incident::IncidentId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .route("/api/v1/notifications/{id}/retry", post(retry))
        .route("/api/v1/incidents/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
}

async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let filter: MessageFilter = query(q)?;
    let list = s.store.messages(filter).await?;
    Ok(Json(json!({"notifications": list})))
}

async fn retry(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::operator(ident.as_ref())?;
    // A JSON content type, which no cross-site form can send.
    super::require_json(&headers)?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::BadRequest(format!("bad notification id `{id}`: a number is expected"))
    })?;
    s.store.outbox_retry(id).await?;
    Ok(Json(json!({"id": id, "state": "pending"})))
}

async fn acknowledge(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id: IncidentId = id.parse().map_err(ApiError::BadRequest)?;
    let ack: super::Author =
        super::optional_json(&s, &headers, body, 16 << 10, "acknowledgement").await?;
    let author = who(&actor, &ack.author)?;
    let first = s.store.acknowledge(id, author).await?;
    let detail = s.store.incident(id).await?;
    Ok(Json(json!({
        "acknowledged": first,
        "acknowledged_by": detail.summary.acknowledged_by,
        "acknowledged_at": detail.summary.acknowledged_at,
    })))
}

/// The author a write records: the operator, or a local request's `author`.
pub(super) fn who(actor: &super::Actor, given: &str) -> Result<String, ApiError> {
    let author = actor.author(given);
    let author = author.trim();
    if author.is_empty() || author.chars().count() > 200 || author.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`author` must be 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(author.to_owned())
}

async fn cancel(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = super::run_id(&id)?;
    let ack: super::Author = super::optional_json(&s, &headers, body, 16 << 10, "request").await?;
    let author = who(&actor, &ack.author)?;
    let before = super::cancel_run(&s, id, author).await?;
    Ok(Json(json!({
        "id": id,
        "was": before,
        "state": if before == crate::incident::RunState::Running { "cancelling" } else { "cancelled" },
    })))
}
