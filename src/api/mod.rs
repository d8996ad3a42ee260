//! The HTTP server: Alertmanager's webhook, the JSON API, health, reload and
//! metrics. [`serve`] takes a bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and stop the app themselves.

mod approvals;
mod errors;
pub(crate) mod health;
pub mod hygiene;
mod incidents;
pub mod listener;
mod notifications;
mod runs;
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
use base64::Engine as _;
use subtle::ConstantTimeEq;

pub use errors::ApiError;
pub use health::{reload_everywhere, reload_runbooks};
pub use ui::http_link;

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
    pub auth: Arc<Auth>,
    pub body_limit: usize,
    /// Runs allowed in the queue; past it the webhook answers 503.
    pub max_queued_runs: Arc<std::sync::atomic::AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub shadow: bool,
    pub http: HttpConfig,
    /// The token every UI form carries (random per process).
    pub csrf: Arc<str>,
    /// The configured notifiers: a reload refuses runbooks naming others.
    pub notifiers: Arc<crate::notify::config::Notifiers>,
    /// Where people reach this runbookd (manual runs' `externalURL`).
    pub external_url: String,
    /// Where `silence:` steps' silences live (expired when their alert resolves).
    pub alertmanager: Option<crate::silence::Alertmanager>,
}

impl AppState {
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
        .merge(notifications::router())
        .merge(runs::router())
        .merge(approvals::router())
        .merge(health::router())
        .merge(ui::router())
        .fallback(|| async { ApiError::NotFound("route".into()) })
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
    let ui = req.method() == axum::http::Method::GET && is_ui_path(req.uri().path());
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

/// Who is asking, by the request's `Authorization` header (compared in
/// constant time against every credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials, or none that match.
    Nobody,
    /// The webhook's own credential (`auth.bearer_token_file` / `auth.basic_auth`).
    Webhook,
    /// One of `auth.users`.
    User {
        name: String,
        role: crate::config::Role,
    },
}

/// The connection's peer address, set by the listener on every request.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

#[must_use]
pub fn identify(auth: &Auth, headers: &HeaderMap) -> Identity {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Identity::Nobody;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut found = Identity::Nobody;
    if scheme.eq_ignore_ascii_case("bearer") {
        let given = rest.trim().as_bytes();
        // Every credential is compared, whatever matched, to keep the timing flat.
        if auth
            .bearer
            .as_ref()
            .is_some_and(|t| ct_eq(given, t.as_bytes()))
        {
            found = Identity::Webhook;
        }
        for u in &auth.users {
            if u.token.as_ref().is_some_and(|t| ct_eq(given, t.as_bytes()))
                && found == Identity::Nobody
            {
                found = Identity::User {
                    name: u.name.clone(),
                    role: u.role,
                };
            }
        }
        return found;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return Identity::Nobody;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Identity::Nobody;
        };
        let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
        if let Some((user, pass)) = &auth.basic {
            if ct_eq(u, user.as_bytes()) & ct_eq(p, pass.as_bytes()) {
                found = Identity::Webhook;
            }
        }
        for user in &auth.users {
            let Some(pass) = &user.password else { continue };
            if (ct_eq(u, user.name.as_bytes()) & ct_eq(p, pass.as_bytes()))
                && found == Identity::Nobody
            {
                found = Identity::User {
                    name: user.name.clone(),
                    role: user.role,
                };
            }
        }
    }
    found
}

/// Whether the request carries the webhook's credentials, as Alertmanager's
/// `http_config` sends them: `Authorization: Bearer T` or `Basic
/// base64(u:p)`. Always true when no webhook auth is configured.
#[must_use]
pub fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    !auth.enabled() || identify(auth, headers) == Identity::Webhook
}

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

fn require_auth(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if authorized(&s.auth, headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn require_read_auth(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !s.auth.protect_reads {
        return Ok(());
    }
    match identify(&s.auth, headers) {
        Identity::Nobody => Err(ApiError::Unauthorized),
        Identity::Webhook | Identity::User { .. } => Ok(()),
    }
}

/// Who performs a write, as the timeline records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator of `auth.users`: the record names them.
    User(String),
    /// No users are configured and the request came from loopback: the
    /// request names its author.
    Local,
}

/// Who may write: an operator when `auth.users` is set (a viewer gets 403);
/// without users, a client on loopback only (with the webhook's credential
/// when one is configured), so that nobody on the network can act
/// anonymously.
///
/// # Errors
/// 401 without valid credentials, 403 for a viewer or a client beyond loopback.
pub fn require_operator(
    auth: &Auth,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<Actor, ApiError> {
    if !auth.users.is_empty() {
        return match identify(auth, headers) {
            Identity::User {
                name,
                role: crate::config::Role::Operator,
            } => Ok(Actor::User(name)),
            Identity::User { name, role } => Err(ApiError::Forbidden(format!(
                "`{name}` has the {} role; this needs an operator",
                role.as_str()
            ))),
            Identity::Webhook | Identity::Nobody => Err(ApiError::Unauthorized),
        };
    }
    if !peer.is_some_and(|p| p.ip().is_loopback() || p.ip().to_canonical().is_loopback()) {
        return Err(ApiError::Forbidden(
            "writes from beyond loopback need a user: configure auth.users (docs/operators.md)"
                .into(),
        ));
    }
    // A page of another site that a local browser loads under a name
    // resolving to 127.0.0.1 (DNS rebinding) sends that name as Host: only
    // loopback names may write without users.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if !["localhost", "127.0.0.1", "[::1]"].contains(&name.to_ascii_lowercase().as_str()) {
        return Err(ApiError::Forbidden(format!(
            "writes without auth.users are taken from loopback names only, not from Host `{}` (docs/operators.md)",
            host.escape_debug()
        )));
    }
    if authorized(auth, headers) {
        Ok(Actor::Local)
    } else {
        Err(ApiError::Unauthorized)
    }
}

impl Actor {
    /// The author to record: the operator's name, or what a local request says.
    #[must_use]
    pub fn author(&self, given: &str) -> String {
        match self {
            Actor::User(name) => name.clone(),
            Actor::Local => given.to_owned(),
        }
    }
}

/// [`require_operator`] for a handler's state, headers and peer.
pub(crate) fn operator(
    s: &AppState,
    headers: &HeaderMap,
    peer: Option<&axum::Extension<Peer>>,
) -> Result<Actor, ApiError> {
    require_operator(&s.auth, headers, peer.map(|p| p.0 .0))
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
    use crate::incident::RunState;
    let before = s.store.cancel_run(id, author.clone()).await?;
    if before == RunState::Running {
        s.dispatcher.cancel(&[id]);
    }
    // Queued: maybe decided and not yet resumed (without a record of steps
    // there is nothing to expire).
    if let (RunState::AwaitingApproval | RunState::Queued, Some(am)) = (before, &s.alertmanager) {
        let (am, store) = (am.clone(), s.store.clone());
        tokio::spawn(async move { am.expire_run_end(&store, id).await });
    }
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
    use crate::config::{Role, User};

    #[test]
    fn secrets_compare_by_content_whatever_their_lengths() {
        assert!(ct_eq(b"olga-token", b"olga-token"));
        assert!(!ct_eq(b"olga-token", b"olga-tokem"));
        assert!(!ct_eq(b"olga-token", b"olga-token-longer"));
        assert!(!ct_eq(b"olga", b"olga-token"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn without_users_only_loopback_may_write() {
        let auth = Auth::default();
        let here: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let there: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let mut none = HeaderMap::new();
        none.insert(axum::http::header::HOST, "127.0.0.1:9095".parse().unwrap());
        assert_eq!(
            require_operator(&auth, &none, Some(here)).unwrap(),
            Actor::Local
        );
        let mut rebound = HeaderMap::new();
        rebound.insert(
            axum::http::header::HOST,
            "evil.example:9095".parse().unwrap(),
        );
        let err = require_operator(&auth, &rebound, Some(here)).unwrap_err();
        assert_eq!(
            err.status_code(),
            axum::http::StatusCode::FORBIDDEN,
            "a rebound name cannot write"
        );
        assert_eq!(
            require_operator(&auth, &none, Some(mapped)).unwrap(),
            Actor::Local
        );
        let err = require_operator(&auth, &none, Some(there)).unwrap_err();
        assert_eq!(err.status_code(), axum::http::StatusCode::FORBIDDEN);
        assert!(err.to_string().contains("auth.users"), "{err}");
        assert!(require_operator(&auth, &none, None).is_err());
        // The webhook's credential, when configured, is still needed on loopback.
        let shared = Auth {
            bearer: Some("hook".into()),
            ..Auth::default()
        };
        assert!(require_operator(&shared, &none, Some(here)).is_err());
        let mut with_token = bearer("hook");
        with_token.insert(axum::http::header::HOST, "localhost".parse().unwrap());
        assert_eq!(
            require_operator(&shared, &with_token, Some(here)).unwrap(),
            Actor::Local
        );
    }

    #[test]
    fn with_users_an_operator_acts_under_their_name_and_a_viewer_cannot() {
        let auth = Auth {
            bearer: Some("hook".into()),
            users: vec![
                User {
                    name: "ana".into(),
                    password: None,
                    token: Some("ana-token".into()),
                    role: Role::Operator,
                },
                User {
                    name: "vic".into(),
                    password: Some("pw".into()),
                    token: Some("vic-token".into()),
                    role: Role::Viewer,
                },
            ],
            ..Auth::default()
        };
        let there: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(
            require_operator(&auth, &bearer("ana-token"), Some(there)).unwrap(),
            Actor::User("ana".into())
        );
        let err = require_operator(&auth, &bearer("vic-token"), Some(there)).unwrap_err();
        assert_eq!(err.status_code(), axum::http::StatusCode::FORBIDDEN);
        assert!(err.to_string().contains("viewer"), "{err}");
        for h in [bearer("hook"), bearer("nope"), HeaderMap::new()] {
            let err = require_operator(&auth, &h, Some(there)).unwrap_err();
            assert_eq!(err.status_code(), axum::http::StatusCode::UNAUTHORIZED);
        }
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("vic:pw")
            )
            .parse()
            .unwrap(),
        );
        assert_eq!(
            identify(&auth, &basic),
            Identity::User {
                name: "vic".into(),
                role: Role::Viewer
            }
        );
        assert_eq!(identify(&auth, &bearer("hook")), Identity::Webhook);
        assert!(authorized(&auth, &bearer("hook")));
        assert!(
            !authorized(&auth, &bearer("ana-token")),
            "a user's token is not the webhook's credential"
        );
    }
}
