//! `POST /api/v1/runs/{id}/approval` `{"decision": "approve"|"deny",
//! "comment": …}`: an operator decides a run's pending approval step.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::approval::{Approval, Decision};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/runs/{id}/approval", get(current).post(approval))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Decided {
    decision: Option<Decision>,
    /// The approval answered: a decision names what it decides, so a stale
    /// one is never applied to the run's next prompt.
    approval: Option<i64>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    author: String,
}

/// The longest comment kept with a decision, in characters.
const MAX_COMMENT: usize = 2000;

/// Records `who`'s decision on run `id`'s pending approval (the first
/// decision wins) and wakes the claim loop to resume it.
pub(super) async fn decide(
    s: &AppState,
    id: i64,
    approval: i64,
    decision: Decision,
    who: String,
    comment: Option<String>,
) -> Result<Approval, ApiError> {
    let comment = comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(c) = &comment {
        if c.chars().count() > MAX_COMMENT {
            return Err(ApiError::BadRequest(format!(
                "`comment` is at most {MAX_COMMENT} characters"
            )));
        }
        if c.chars()
            .any(|ch| ch.is_control() && ch != '\n' && ch != '\t')
        {
            return Err(ApiError::BadRequest(
                "`comment` must not hold control characters (other than line breaks and tabs)"
                    .into(),
            ));
        }
    }
    let a = s
        .dispatcher
        .decide((id, approval), decision, who, comment)
        .await?;
    tracing::info!(run = id, step = %a.step, decision = %a.state, by = ?a.decided_by, "approval decided");
    Ok(a)
}

async fn approval(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = super::run_id(&id)?;
    let b: Decided = super::optional_json(&s, &headers, body, 16 << 10, "decision").await?;
    let Some(decision) = b.decision else {
        return Err(ApiError::BadRequest(
            "`decision` is required: \"approve\" or \"deny\"".into(),
        ));
    };
    let Some(approval) = b.approval else {
        return Err(ApiError::BadRequest(format!(
            "`approval` is required: the id of the approval you answer (GET /api/v1/runs/{id}/approval shows the one the run waits on, with its prompt)"
        )));
    };
    let author = super::notifications::who(&actor, &b.author)?;
    let a = decide(&s, id, approval, decision, author, b.comment).await?;
    Ok(Json(json!({ "run": id, "approval": a })))
}

/// `GET /api/v1/runs/{id}/approval`: the run's latest approval (pending
/// while the run waits on it), with its id, prompt and deadline.
async fn current(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = super::run_id(&id)?;
    let Some((incident, _, _)) = s.store.run_origin(id).await? else {
        return Err(ApiError::NotFound(format!("run {id}")));
    };
    let detail = s.store.incident(incident).await?;
    detail
        .approvals
        .into_iter()
        .filter(|a| a.run_id.0 == id)
        .max_by_key(|a| a.id)
        .map(|a| Json(json!(a)))
        .ok_or_else(|| ApiError::NotFound(format!("an approval of run {id}")))
}
