//! Notifications and acknowledgements: `GET /api/v1/notifications`,
//! `POST /api/v1/notifications/{id}/retry`,
//! `POST /api/v1/incidents/{id}/acknowledge`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::incidents::query;
use super::{read_body, require_auth, require_read_auth, ApiError, AppState};
use crate::incident::IncidentId;
use crate::notify::MessageFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .route("/api/v1/notifications/{id}/retry", post(retry))
        .route("/api/v1/incidents/{id}/acknowledge", post(acknowledge))
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    require_read_auth(&s, &headers)?;
    let filter: MessageFilter = query(q)?;
    let list = s.store.messages(filter).await?;
    Ok(Json(json!({"notifications": list})))
}

async fn retry(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_auth(&s, &headers)?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::BadRequest(format!("bad notification id `{id}`: a number is expected"))
    })?;
    s.store.outbox_retry(id).await?;
    Ok(Json(json!({"id": id, "state": "pending"})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    author: String,
}

async fn acknowledge(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    require_auth(&s, &headers)?;
    super::require_json(&headers)?;
    let id: IncidentId = id.parse().map_err(ApiError::BadRequest)?;
    let bytes = read_body(body, 16 << 10, s.http.request_timeout).await?;
    let ack: Ack = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid acknowledgement: {e}")))?;
    let author = ack.author.trim();
    if author.is_empty() || author.chars().count() > 200 || author.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`author` must be 1 to 200 characters without control characters".into(),
        ));
    }
    let first = s.store.acknowledge(id, author.to_owned()).await?;
    let detail = s.store.incident(id).await?;
    Ok(Json(json!({
        "acknowledged": first,
        "acknowledged_by": detail.acknowledged_by,
        "acknowledged_at": detail.acknowledged_at,
    })))
}
