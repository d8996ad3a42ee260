//! The JSON API: incidents (list with filters and paging, detail, updates),
//! runbooks, plans, stats. Reads need credentials only with
//! `auth.protect_reads`; writes always need them when auth is configured.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{read_body, ApiError, AppState};
use crate::alert::Notification;
use crate::incident::{IncidentId, Update};
use crate::plan::{Plan, PLAN_INCIDENT_ID};
use crate::store::IncidentFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents", get(list))
        .route("/api/v1/incidents/{id}", get(detail))
        .route("/api/v1/incidents/{id}/updates", post(add_update))
        .route("/api/v1/incidents/{id}/postmortem", get(postmortem))
        .route("/api/v1/runbooks", get(runbooks))
        .route("/api/v1/plan", post(plan))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/unmatched", get(unmatched))
}

pub(super) fn query<T: DeserializeOwned + Default>(raw: Option<String>) -> Result<T, ApiError> {
    match raw {
        None => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}"))),
    }
}

fn incident_id(raw: &str) -> Result<IncidentId, ApiError> {
    raw.parse().map_err(ApiError::BadRequest)
}

async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let filter: IncidentFilter = query(q)?;
    let (limit, offset) = (
        filter.limit.unwrap_or(50).min(500),
        filter.offset.unwrap_or(0),
    );
    let (incidents, total) = s.store.incidents(filter).await?;
    Ok(Json(
        json!({"incidents": incidents, "total": total, "limit": limit, "offset": offset, "shadow": s.shadow}),
    ))
}

async fn detail(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let detail = s.store.incident(incident_id(&id)?).await?;
    let (budget, spent) = super::slos::incident_budget(&s, &detail).await;
    // Recorded once it resolved (or the severity rule), or spending now.
    let affecting = detail.summary.slo_affecting || spent;
    let mut v = serde_json::to_value(detail).unwrap_or_default();
    v["slo_budget"] = serde_json::to_value(budget).unwrap_or_default();
    v["slo_affecting"] = Value::Bool(affecting);
    Ok(Json(v))
}

async fn add_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    super::require_json(&headers)?;
    let id = incident_id(&id)?;
    let bytes = read_body(body, 256 << 10, s.http.request_timeout).await?;
    let mut update: Update = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid update: {e}")))?;
    update.author = actor.author(&update.author);
    update.check().map_err(ApiError::BadRequest)?;
    s.store.add_update(id, update).await?;
    let detail = s.store.incident(id).await?;
    Ok(Json(serde_json::to_value(detail).unwrap_or_default()))
}

async fn runbooks(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let set = s.runbook_set();
    let list: Vec<Value> = set.iter().map(|rb| runbook_json(rb)).collect();
    Ok(Json(json!({"runbooks": list})))
}

/// A runbook as the API (and, extended, the UI) shows it.
pub(super) fn runbook_json(rb: &crate::runbook::Runbook) -> Value {
    let steps = |steps: &[crate::runbook::Step]| {
        steps
            .iter()
            .map(|st| json!({"name": st.name, "kind": st.action.kind(), "command": st.action.source()}))
            .collect::<Vec<_>>()
    };
    json!({
        "name": rb.name,
        "title": rb.title,
        "severity": rb.severity,
        "description": rb.description,
        "matchers": rb.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "source": rb.source.display().to_string(),
        "timeout_ms": rb.timeout.as_millis(),
        "concurrency": rb.concurrency,
        "cooldown_ms": rb.cooldown.as_millis(),
        "rate": rb.rate.map(|r| r.to_string()),
        "cancel_on_resolved": rb.cancel_on_resolved,
        "idempotent": rb.idempotent,
        "steps": steps(&rb.steps),
        "on_failure": steps(&rb.on_failure),
        "on_resolved": steps(&rb.on_resolved),
        "inputs": rb.inputs.iter().map(|i| json!({
            "label": i.label,
            "description": i.description,
            "matches": i.pattern.as_ref().map(|p| p.value.clone()),
        })).collect::<Vec<_>>(),
        "env": rb.env.iter().map(|(k, v)| json!({"name": k, "value": match v {
            crate::runbook::EnvValue::Template(t) => t.source().to_owned(),
            crate::runbook::EnvValue::Secret(s) => s.shown(),
        }})).collect::<Vec<_>>(),
    })
}

async fn plan(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    super::require_json(&headers)?;
    let bytes = read_body(body, s.body_limit, s.http.request_timeout).await?;
    let n = Notification::from_json(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid Alertmanager payload: {e}")))?;
    let set = s.runbook_set();
    Ok(Json(
        serde_json::to_value(Plan::build(&n, &set, PLAN_INCIDENT_ID)).unwrap_or_default(),
    ))
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    window: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UnmatchedQuery {
    limit: Option<u32>,
}

/// Recent firing alerts that no runbook matched.
async fn unmatched(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q: UnmatchedQuery = query(q)?;
    let alerts = s.store.unmatched(q.limit.unwrap_or(100).min(1000)).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn stats(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q: StatsQuery = query(q)?;
    let window = match q.window.as_deref() {
        None => Duration::from_secs(7 * 86400),
        Some(w) => crate::duration::parse(w)
            .map_err(|e| ApiError::BadRequest(format!("bad `window`: {e}")))?,
    };
    let stats = s.store.stats(window).await?;
    Ok(Json(serde_json::to_value(stats).unwrap_or_default()))
}

async fn postmortem(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let detail = s.store.incident(incident_id(&id)?).await?;
    let (budget, _) = super::slos::incident_budget(&s, &detail).await;
    let text = crate::postmortem::render_with_budget(&detail, None, &budget).map_err(|e| {
        tracing::error!(error = %e, "the default postmortem template failed");
        ApiError::Unavailable
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
