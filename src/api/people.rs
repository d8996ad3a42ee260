//! People working an incident: `POST /api/v1/incidents/{id}/checklist`
//! (tick or reopen a checklist item) and `POST
//! /api/v1/incidents/{id}/commander` (hand command over).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::notifications::who;
use super::{ApiError, AppState};
use crate::incident::IncidentId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents/{id}/checklist", post(tick))
        .route("/api/v1/incidents/{id}/commander", post(commander))
}

fn default_done() -> bool {
    true
}

/// A tick: the item (its step's name, and its run when several runs have
/// one), done or reopened.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TickRequest {
    #[serde(default)]
    pub run_id: Option<i64>,
    pub step: String,
    #[serde(default = "default_done")]
    pub done: bool,
    #[serde(default)]
    pub author: String,
}

async fn tick(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id: IncidentId = id.parse().map_err(ApiError::BadRequest)?;
    super::require_json(&headers)?;
    let bytes = super::read_body(body, 16 << 10, s.http.request_timeout).await?;
    let t: TickRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid checklist tick: {e}")))?;
    let author = who(&actor, &t.author)?;
    Ok(Json(json!(tick_as(&s, id, t, author).await?)))
}

/// Ticks for `author`: the item as it is now.
pub(super) async fn tick_as(
    s: &AppState,
    id: IncidentId,
    t: TickRequest,
    author: String,
) -> Result<crate::incident::ChecklistItem, ApiError> {
    if t.step.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`step` names the checklist item (its manual step's name)".into(),
        ));
    }
    Ok(s.store
        .tick(
            id,
            crate::store::Tick {
                run_id: t.run_id,
                step: t.step,
                done: t.done,
                who: author,
            },
        )
        .await?)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommanderRequest {
    /// Who leads the incident from now on.
    pub name: String,
    #[serde(default)]
    pub author: String,
}

async fn commander(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id: IncidentId = id.parse().map_err(ApiError::BadRequest)?;
    super::require_json(&headers)?;
    let bytes = super::read_body(body, 16 << 10, s.http.request_timeout).await?;
    let c: CommanderRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid hand-over: {e}")))?;
    let author = who(&actor, &c.author)?;
    Ok(Json(json!(hand_over_as(&s, id, &c.name, author).await?)))
}

/// Hands `id` over to `name`, `author`'s doing. With `auth.users`, the new
/// commander must be one of the operators.
pub(super) async fn hand_over_as(
    s: &AppState,
    id: IncidentId,
    name: &str,
    author: String,
) -> Result<crate::store::HandOver, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "`name` (the new commander) must be 1 to 200 characters without control characters"
                .into(),
        ));
    }
    let auth = s.auth();
    if !auth.users.is_empty()
        && !auth
            .users
            .iter()
            .any(|u| u.name == name && u.role == crate::config::Role::Operator)
    {
        let operators: Vec<&str> = auth
            .users
            .iter()
            .filter(|u| u.role == crate::config::Role::Operator)
            .map(|u| u.name.as_str())
            .collect();
        return Err(ApiError::BadRequest(format!(
            "`{name}` is not an operator of this runbookd (operators: {})",
            operators.join(", ")
        )));
    }
    Ok(s.store.hand_over(id, name.to_owned(), author).await?)
}
