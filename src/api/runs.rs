//! Runs on demand: `POST /api/v1/runbooks/{name}/runs` (a manual run, or
//! with `plan: true` its plan) and `POST /api/v1/runs/{id}/rerun`.
//!
//! A manual run is an Alertmanager notification that runbookd writes itself
//! (receiver `runbookd-manual`, one alert with the given labels and
//! annotations) and ingests like any other: its labels reach steps exactly
//! as a webhook alert's do, so they are as inert; only the matching is
//! skipped (the named runbook runs).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::alert::{Labels, Notification};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runbooks/{name}/runs", post(trigger))
        .route("/api/v1/runs/{id}/rerun", post(rerun))
}

/// The receiver of manual runs' incidents.
pub const MANUAL_RECEIVER: &str = "runbookd-manual";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    /// Only show what would run.
    #[serde(default)]
    pub plan: bool,
    /// Who, when no users are configured.
    #[serde(default)]
    pub author: String,
}

/// Prometheus' label names: what Alertmanager would accept.
pub(super) fn check_labels(labels: &Labels, what: &str) -> Result<(), ApiError> {
    for name in labels.keys() {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "bad {what} name `{}`: use letters, digits and `_`, not starting with a digit",
                name.escape_debug()
            )));
        }
    }
    Ok(())
}

/// The notification of a manual run of `runbook` (see
/// [`crate::dispatch::manual_notification`]).
pub(super) fn manual_notification(
    runbook: &str,
    mut labels: Labels,
    annotations: &Labels,
    external_url: &str,
) -> Result<(Notification, Vec<u8>), ApiError> {
    // A distinct label: a manual run's alert is never taken for the real
    // one with the same labels (fingerprints, cancel_on_resolved, runs in
    // progress).
    let nonce = crate::exec::instance::random_hex(6)
        .map_err(|e| ApiError::BadRequest(format!("cannot make a run id: {e}")))?;
    labels.insert("runbookd_origin".into(), format!("manual {nonce}"));
    crate::dispatch::manual_notification(
        MANUAL_RECEIVER,
        runbook,
        labels,
        annotations,
        external_url,
    )
    .map_err(ApiError::BadRequest)
}

/// Refuses a manual run (or its plan) that lacks a label the runbook
/// declares in `inputs:`, or gives one that does not match its pattern.
pub(super) fn check_inputs(rb: &crate::runbook::Runbook, labels: &Labels) -> Result<(), ApiError> {
    let missing = rb.missing_inputs(labels);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            message: format!(
                "a manual run of `{}` needs: {}",
                rb.name,
                missing.join("; ")
            ),
            errors: missing,
        })
    }
}

pub(super) async fn start(
    s: &AppState,
    runbook: &str,
    labels: Labels,
    annotations: Labels,
    author: &str,
    note: String,
) -> Result<Value, ApiError> {
    start_as(
        s,
        runbook,
        labels,
        annotations,
        author,
        note,
        s.shadow,
        true,
    )
    .await
}

/// [`start`], planned only (`plan_only`) or without notifications.
#[allow(clippy::too_many_arguments)]
async fn start_as(
    s: &AppState,
    runbook: &str,
    labels: Labels,
    annotations: Labels,
    author: &str,
    note: String,
    plan_only: bool,
    notify: bool,
) -> Result<Value, ApiError> {
    let set = s.runbook_set();
    let rb = set
        .get(runbook)
        .ok_or_else(|| ApiError::NotFound(format!("runbook `{runbook}`")))?
        .clone();
    check_inputs(&rb, &labels)?;
    let (n, body) = manual_notification(runbook, labels, &annotations, &s.external_url)?;
    if body.len() > s.body_limit {
        return Err(ApiError::PayloadTooLarge(s.body_limit));
    }
    let note = crate::incident::Update {
        author: author.to_owned(),
        message: note,
        status: None,
        root_cause: None,
    };
    let ingested = s
        .dispatcher
        .run_manually(
            &rb,
            (n, body),
            s.max_queued_runs.load(std::sync::atomic::Ordering::Relaxed),
            (plan_only, notify),
            note,
        )
        .await?;
    let incident = ingested
        .incident
        .ok_or_else(|| ApiError::BadRequest("the run was not recorded".into()))?;
    tracing::info!(runbook, incident = %incident, by = author, runs = ingested.queued.len(), "manual run queued");
    Ok(json!({
        "incident": incident,
        "runs": ingested.queued,
        "duplicate_runs": ingested.duplicates,
        "shadow": plan_only,
    }))
}

async fn trigger(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    // A plan is a read; a run is an operator's write.
    let t: Trigger = super::optional_json(&s, &headers, body, s.body_limit, "run request").await?;
    check_labels(&t.labels, "label")?;
    check_labels(&t.annotations, "annotation")?;
    if t.plan {
        let set = s.runbook_set();
        let rb = set
            .get(&name)
            .ok_or_else(|| ApiError::NotFound(format!("runbook `{name}`")))?;
        check_inputs(rb, &t.labels)?;
        let (n, _) = manual_notification(&name, t.labels, &t.annotations, &s.external_url)?;
        let plan = crate::plan::Plan::manual(&n, rb, crate::plan::PLAN_INCIDENT_ID);
        return Ok(Json(serde_json::to_value(plan).unwrap_or_default()));
    }
    let actor = super::operator(ident.as_ref())?;
    let author = super::notifications::who(&actor, &t.author)?;
    let note = format!("started a manual run of `{name}`");
    Ok(Json(
        start(&s, &name, t.labels, t.annotations, &author, note).await?,
    ))
}

async fn rerun(
    State(s): State<AppState>,
    headers: HeaderMap,
    ident: Option<axum::Extension<super::Identity>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = super::operator(ident.as_ref())?;
    let id = super::run_id(&id)?;
    let r: super::Author = super::optional_json(&s, &headers, body, 16 << 10, "request").await?;
    let author = super::notifications::who(&actor, &r.author)?;
    Ok(Json(rerun_as(&s, id, author).await?))
}

/// Re-runs run `id` for `author`: the same runbook for the same alert, on
/// the same incident (no new incident, nobody paged for one), in place of
/// the original.
pub(super) async fn rerun_as(s: &AppState, id: i64, author: String) -> Result<Value, ApiError> {
    let r = s.dispatcher.rerun(id, author.clone()).await?;
    tracing::info!(run = id, rerun = r.run, incident = %r.incident, by = %author, "re-run queued");
    Ok(json!({
        "incident": r.incident,
        "runs": [r.run],
        "rerun_of": r.rerun_of,
        "duplicate_runs": 0,
    }))
}
