//! Operations, as Alertmanager names them: `/-/healthy`, `/-/ready`,
//! `POST /-/reload` (the config file's live settings and the runbooks; an
//! invalid config or runbook set is refused with its errors and everything
//! in force kept), `/metrics` in the Prometheus text format, and `GET
//! /api/v1/status`: the version, the store, and what the step sandbox
//! enforces right now, layer by layer.

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
        .route("/api/v1/status", get(status))
}

/// The version, the store and the sandbox report.
async fn status(State(s): State<AppState>) -> Json<Value> {
    let report = s.dispatcher.executor.sandbox.report();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": if s.store.shared() { "postgres" } else { "sqlite" },
        "sandbox": report,
    }))
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

/// The settings a reload reads again from the config file, checked, not
/// yet in force.
struct Settings {
    auth: crate::config::Auth,
    notifiers: std::sync::Arc<crate::notify::config::Notifiers>,
    alertmanager: Option<crate::alertmanager::Alertmanager>,
    run_rate: Option<crate::duration::Rate>,
    max_queued_runs: u64,
    /// Settings that changed but need a restart.
    restart: Vec<&'static str>,
    /// The paths the reloaded config keeps from steps (its secret files).
    hidden: Vec<std::path::PathBuf>,
}

/// Reads the config file again (when `serve` was given one).
fn read_settings(s: &AppState) -> Result<Option<Settings>, String> {
    let Some(src) = &s.config.source else {
        return Ok(None);
    };
    let cfg = crate::config::ServerConfig::load(Some(&src.file), src.overrides.clone())
        .map_err(|e| format!("{e:#}"))?;
    let auth = crate::api::auth::credentials(&cfg, &s.dispatcher.executor.sandbox, None)
        .map_err(|e| format!("{e:#}"))?;
    let before = s.config.restart_only();
    let restart = cfg
        .restart_only()
        .into_iter()
        .zip(before)
        .filter(|(now, was)| now.1 != was.1)
        .map(|(now, _)| now.0)
        .collect();
    Ok(Some(Settings {
        auth,
        notifiers: cfg.notifiers.clone(),
        alertmanager: cfg.alertmanager.clone(),
        run_rate: cfg.run_rate,
        max_queued_runs: cfg.max_queued_runs,
        restart,
        hidden: cfg.sandbox.hidden.clone(),
    }))
}

/// Reloads: the config file's users and credentials, notifiers,
/// Alertmanager and limits (when `serve` was given a config file), and the
/// runbook directory. All or nothing: an invalid config or runbook set is
/// refused with every error and everything in force stays.
///
/// # Errors
/// The config's error, or every error of the new runbook set.
pub fn reload_runbooks(s: &AppState) -> Result<usize, ApiError> {
    let _one_at_a_time = s
        .reloading
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let settings = read_settings(s).map_err(|e| {
        s.metrics.reloaded(false);
        tracing::error!("reload refused, the previous settings and runbooks stay in force: {e}");
        ApiError::Invalid {
            message: "invalid config: the previous settings and runbooks stay in force".into(),
            errors: vec![e],
        }
    })?;
    let notifiers = settings
        .as_ref()
        .map_or_else(|| s.notifiers.get(), |c| c.notifiers.clone());
    let configured: Vec<&str> = notifiers.keys().map(String::as_str).collect();
    // The SLO files, and the notifiers their policies name.
    let slos = crate::slo::load_configured(s.config.slos.as_deref())
        .and_then(|slos| slos.check_notifiers(&configured).map(|()| slos))
        .map_err(|errors| {
            s.metrics.reloaded(false);
            tracing::error!(
                "reload refused, the previous SLOs, settings and runbooks stay in force:\n{errors}"
            );
            ApiError::Invalid {
                message:
                    "invalid SLO files: the previous SLOs, settings and runbooks stay in force"
                        .into(),
                errors: errors.0.iter().map(ToString::to_string).collect(),
            }
        })?;
    let loaded = crate::runbook::load_dir(&s.runbooks_dir).and_then(|set| {
        crate::notify::config::check_refs(&set, &notifiers)?;
        slos.check_runbook_refs(&set)?;
        Ok(set)
    });
    // The sandbox hides the new set's secret files, and the reloaded
    // config's (a new user's token file, a notifier's), before any step
    // can run under the new set or any of those is read by runbookd.
    let config_secrets = settings
        .as_ref()
        .map(|c| c.hidden.clone())
        .unwrap_or_default();
    let loaded = loaded.and_then(|set| {
        let mut secrets = set.secret_files();
        secrets.extend(config_secrets);
        s.dispatcher
            .executor
            .sandbox
            .hide_secrets(&secrets)
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
            let n_slos = slos.len();
            *s.slos
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(slos);
            if s.config.slos.is_some() {
                tracing::info!(slos = n_slos, "SLOs reloaded");
            }
            if let Some(c) = settings {
                *s.auth
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    std::sync::Arc::new(c.auth);
                s.notifiers.set(c.notifiers);
                s.alertmanager.set(c.alertmanager);
                *s.run_rate
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = c.run_rate;
                s.max_queued_runs
                    .store(c.max_queued_runs, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("config reloaded: users and credentials, notifiers, alertmanager, limits.run_rate and limits.max_queued_runs are in force");
                for key in c.restart {
                    tracing::warn!(
                        setting = key,
                        "`{key}` changed in the config: it takes effect at the next restart"
                    );
                }
            }
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
