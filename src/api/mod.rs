//! The HTTP server: Alertmanager's webhook, the JSON API, health, reload and
//! metrics. [`serve`] takes a bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and stop the app themselves.

mod approvals;
pub mod auth;
mod errors;
mod forecasts;
pub mod gates;
pub(crate) mod health;
pub mod hygiene;
mod incidents;
pub mod listener;
mod notifications;
mod people;
mod runs;
pub mod slos;
mod ui;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use subtle::ConstantTimeEq;

pub use crate::postmortem::http_link;
pub use auth::{identify, Actor, Identity};
pub use errors::ApiError;
pub use health::{reload_everywhere, reload_runbooks};
pub use webhook::ingest;

use crate::config::{Auth, HttpConfig};
use crate::dispatch::{Dispatcher, Runbooks};
use crate::metrics::{Metrics, Route, RouteCode};
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub dispatcher: Arc<Dispatcher>,
    pub runbooks: Runbooks,
    pub runbooks_dir: PathBuf,
    /// The SLOs in force (`slos:`), reloaded with the runbooks.
    pub slos: Arc<std::sync::RwLock<Arc<crate::slo::SloSet>>>,
    /// Their status, as the background refresh last read it.
    pub slo_status: crate::slo::refresh::Shared,
    /// The last capacity forecasts read (DESIGN §13).
    pub forecasts: crate::capacity::read::Shared,
    /// Where that status comes from (`prometheus:`).
    pub prometheus: Option<crate::prometheus::Prometheus>,
    /// Credentials and users: a reload (SIGHUP) swaps them whole.
    pub auth: Arc<std::sync::RwLock<Arc<Auth>>>,
    pub body_limit: usize,
    /// Runs allowed in the queue; past it the webhook answers 503.
    pub max_queued_runs: Arc<std::sync::atomic::AtomicU64>,
    /// `limits.run_rate`: runs of all runbooks per window, for alerts.
    pub run_rate: Arc<std::sync::RwLock<Option<crate::duration::Rate>>>,
    pub metrics: Arc<Metrics>,
    pub shadow: bool,
    pub http: HttpConfig,
    /// The token every UI form carries (random per process).
    pub csrf: Arc<str>,
    /// The configured notifiers: a reload refuses runbooks naming others
    /// (and may replace them, from the config file).
    pub notifiers: crate::shared::Shared<Arc<crate::notify::config::Notifiers>>,
    /// Where people reach this runbookd (manual runs' `externalURL`).
    pub external_url: String,
    /// Where `silence:` steps' silences live (expired when their alert
    /// resolves); a reload may change it.
    pub alertmanager: crate::silence::Alertmanagers,
    /// The config the server started with (its file is read again on
    /// reload).
    pub config: Arc<crate::config::ServerConfig>,
    /// Held across a whole reload (load, hide its secrets, swap), so that
    /// two at once (the API, SIGHUP, another replica's) cannot leave one
    /// set in force under the other's sandbox policy.
    pub reloading: Arc<std::sync::Mutex<()>>,
}

impl AppState {
    /// The credentials in force now.
    #[must_use]
    pub fn auth(&self) -> Arc<Auth> {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The runbook set in force now (a reload swaps it whole).
    #[must_use]
    pub fn runbook_set(&self) -> Arc<crate::runbook::RunbookSet> {
        self.runbooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// All routes, with request metrics, the Host and same-origin checks, and
/// the security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(incidents::router())
        .merge(slos::router())
        .merge(forecasts::router())
        .merge(gates::router())
        .merge(notifications::router())
        .merge(runs::router())
        .merge(approvals::router())
        .merge(people::router())
        .merge(health::router())
        .merge(ui::router())
        .merge(auth::router())
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), auth::gate))
        .layer(middleware::from_fn_with_state(state.clone(), html_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            hygiene::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(hygiene::headers))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = state.http.clone();
    listener::serve(listener, router(state), http, shutdown).await
}

/// Whether `path` belongs to the web UI (pages for people) rather than the
/// API, the webhook, health checks, metrics or static assets.
fn is_ui_path(path: &str) -> bool {
    !["/api/", "/-/", "/webhook", "/metrics", "/assets/"]
        .iter()
        .any(|p| path.starts_with(p))
        && !path.ends_with("/events")
}

/// A person's browser asking for a page gets an HTML error page, not the
/// API's JSON error (which clients of the API keep getting).
async fn html_errors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // A page, or a form of a page (a person's browser either way).
    let form = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    let ui = (req.method() == axum::http::Method::GET
        || (req.method() == axum::http::Method::POST && form))
        && is_ui_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !ui
        || !json
        || !(status.is_client_error() || status.is_server_error())
        || status == axum::http::StatusCode::UNAUTHORIZED
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let message = axum::body::to_bytes(body, 64 << 10)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "Something went wrong.".to_owned());
    let mut html = ui::html_error(&s, status, &message);
    for (k, v) in &parts.headers {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            html.headers_mut().insert(k.clone(), v.clone());
        }
    }
    html
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .http_duration
        .get_or_create(&Route {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    s.metrics
        .http_requests
        .get_or_create(&RouteCode {
            route,
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

/// Whether two secrets are equal, in time independent of where they differ
/// and of their lengths: their SHA-256 digests (always 32 bytes) are
/// compared in constant time.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// The connection's peer address, set by the listener on every request
/// (logged; never a credential).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Refuses a body whose declared type is not JSON (a cross-site HTML form
/// can only send `text/plain`, `multipart/form-data` or urlencoded bodies).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON sent as `Content-Type: application/json`{}",
            if ct.is_empty() {
                String::new()
            } else {
                format!(", not `{ct}`")
            }
        )))
    }
}

/// [`auth::operator`]: the operator a handler acts for.
pub(crate) fn operator(who: Option<&axum::Extension<Identity>>) -> Result<Actor, ApiError> {
    auth::operator(who)
}

/// A body naming who acts (`{"author": …}`), needed only without users.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Author {
    #[serde(default)]
    pub author: String,
}

/// A JSON body that may be empty (then the defaults), always under the JSON
/// content type (which no cross-site form can send).
pub(crate) async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit, s.http.request_timeout).await?;
    require_json(headers)?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))
}

/// A UI form's token.
pub(crate) trait FormToken {
    fn csrf(&self) -> &str;
}

/// A UI form: read (at most `limit` bytes), parsed, its token checked.
pub(crate) async fn form<T: serde::de::DeserializeOwned + FormToken>(
    s: &AppState,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit, s.http.request_timeout).await?;
    let f: T = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid form: {e}")))?;
    hygiene::check_form_token(s, f.csrf())?;
    Ok(f)
}

/// Cancels run `id` for `author` (the API and the UI's button): a running
/// run is stopped by whichever replica runs it (this one at once; another
/// at its next heartbeat); one that had paused for approval never runs
/// again, so its `until: run_end` silences are expired now (in the
/// background). Answers the state the run had.
pub(crate) async fn cancel_run(
    s: &AppState,
    id: i64,
    author: String,
) -> Result<crate::incident::RunState, ApiError> {
    let before = s.dispatcher.cancel_run(id, author.clone()).await?;
    // Its `until: run_end` silences, if it made any, are expired by the
    // silence keeper, which finds the run ended in the store.
    tracing::info!(run = id, by = %author, was = %before, "cancellation requested");
    Ok(before)
}

/// A run's id in a path.
pub(crate) fn run_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("bad run id `{raw}`: a number is expected")))
}

/// After the limit is exceeded, how much more of a body is read and thrown
/// away (and for how long) so that the client, still writing, receives the
/// 413 instead of a reset connection.
const DRAIN_MAX: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a request body up to `limit` bytes, within `timeout`.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    tokio::time::timeout(timeout, read_body_inner(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?
}

async fn read_body_inner(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut drained = buf.len() + data.len();
            let deadline = tokio::time::Instant::now() + DRAIN_TIME;
            while drained < DRAIN_MAX {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(f))) => drained += f.data_ref().map_or(0, axum::body::Bytes::len),
                    _ => break,
                }
            }
            return Err(ApiError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_whatever_their_lengths() {
        assert!(ct_eq(b"olga-token", b"olga-token"));
        assert!(!ct_eq(b"olga-token", b"olga-tokem"));
        assert!(!ct_eq(b"olga-token", b"olga-token-longer"));
        assert!(!ct_eq(b"olga", b"olga-token"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
    }
}
