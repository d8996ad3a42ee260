//! Who is asking, and what they may do. **No request is trusted for where it
//! comes from**: steps run on this host, so loopback is not a credential.
//!
//! Credentials: the webhook's own (`auth.bearer_token_file` /
//! `auth.basic_auth`, as Alertmanager's `http_config` sends them); people of
//! `auth.users` (basic auth or a bearer token); without users, the local
//! operator credential runbookd makes at first start (`operator.token` in the
//! data directory, readable only by runbookd's user and hidden from steps)
//! that the CLI finds by itself; and a browser session (a cookie) that
//! `/login` gives for either, signed with the credential it was given for,
//! so that any replica with the same credentials accepts it and changing
//! the credential ends it.
//!
//! [`gate`] decides for every request, before any handler, so a route added
//! later is protected without asking: the health checks, `/login` and the
//! UI's static files are public; `/webhook` answers to its own credential;
//! every other read needs a credential (unless `auth.protect_reads: false`)
//! and every other write an operator. Handlers then only ask *who*
//! ([`operator`]) to record it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

use super::{ct_eq, ApiError, AppState};
use crate::config::{Auth, Role};

/// The cookie of a browser session.
pub const SESSION_COOKIE: &str = "runbookd_session";

/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The local operator credential's file name, in the data directory.
pub const LOCAL_TOKEN_FILE: &str = "operator.token";

/// The webhook credential runbookd makes when none is configured, in the
/// data directory.
pub const WEBHOOK_TOKEN_FILE: &str = "webhook.token";

/// The server's session key, made in the data directory unless
/// `auth.session_key_file` names one.
pub const SESSION_KEY_FILE: &str = "session.key";

/// Who is asking, by the request's `Authorization` header or session
/// cookie (every credential compared in constant time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials, or none that match.
    Nobody,
    /// The webhook's own credential: may post alerts and read.
    Webhook,
    /// The local operator credential (no `auth.users`): an operator who
    /// names themselves in each write.
    Local,
    /// One of `auth.users`.
    User { name: String, role: Role },
}

impl Identity {
    /// Whether this identity may read the API and the UI.
    #[must_use]
    pub fn may_read(&self) -> bool {
        !matches!(self, Identity::Nobody)
    }

    /// Whether this identity may act (updates, approvals, cancels, …).
    #[must_use]
    pub fn may_act(&self) -> bool {
        matches!(
            self,
            Identity::Local
                | Identity::User {
                    role: Role::Operator,
                    ..
                }
        )
    }
}

/// Who performs a write, as the timeline records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator of `auth.users`: the record names them.
    User(String),
    /// The local operator (no users are configured): the request names its
    /// author.
    Local,
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

/// Who the request is from.
#[must_use]
pub fn identify(auth: &Auth, headers: &HeaderMap) -> Identity {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => by_authorization(auth, value),
        None => session(headers).map_or(Identity::Nobody, |v| verify_session(auth, v, now_secs())),
    }
}

fn by_authorization(auth: &Auth, value: &str) -> Identity {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut found = Identity::Nobody;
    // Every credential is compared, whatever matched, to keep the timing flat.
    let mut take = |is: bool, who: Identity| {
        if is && found == Identity::Nobody {
            found = who;
        }
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        let given = rest.trim().as_bytes();
        take(
            auth.bearer
                .as_ref()
                .is_some_and(|t| ct_eq(given, t.as_bytes())),
            Identity::Webhook,
        );
        take(
            auth.local
                .as_ref()
                .is_some_and(|t| ct_eq(given, t.as_bytes())),
            Identity::Local,
        );
        for u in &auth.users {
            take(
                u.token.as_ref().is_some_and(|t| ct_eq(given, t.as_bytes())),
                Identity::User {
                    name: u.name.clone(),
                    role: u.role,
                },
            );
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return Identity::Nobody;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Identity::Nobody;
        };
        let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
        if let Some((user, pass)) = &auth.basic {
            take(
                ct_eq(u, user.as_bytes()) & ct_eq(p, pass.as_bytes()),
                Identity::Webhook,
            );
        }
        for user in &auth.users {
            let Some(pass) = &user.password else { continue };
            take(
                ct_eq(u, user.name.as_bytes()) & ct_eq(p, pass.as_bytes()),
                Identity::User {
                    name: user.name.clone(),
                    role: user.role,
                },
            );
        }
    }
    found
}

/// Whether the request may post alerts: it carries the webhook's
/// credential, as Alertmanager's `http_config` sends it (configured, or made
/// by runbookd at first start: a post is a write, and loopback is no
/// credential, so one is always needed), or an operator's (who could run
/// any runbook by hand anyway).
#[must_use]
pub fn webhook_authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    let who = identify(auth, headers);
    who == Identity::Webhook || who.may_act()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// The key sessions of `who` are signed with: derived from their own
/// credential, so a changed credential ends every session made with it.
fn session_key(auth: &Auth, who: &Identity) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    let secret = match who {
        Identity::Local => auth.local.clone()?,
        Identity::User { name, .. } => {
            let u = auth.users.iter().find(|u| &u.name == name)?;
            format!(
                "{}\0{}\0{}",
                u.name,
                u.password.as_deref().unwrap_or(""),
                u.token.as_deref().unwrap_or("")
            )
        }
        Identity::Nobody | Identity::Webhook => return None,
    };
    let mut h = sha2::Sha256::new();
    h.update(b"runbookd session v1\0");
    h.update(auth.session_key.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    Some(h.finalize().to_vec())
}

fn session_mac(key: &[u8], payload: &str) -> Option<String> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    Some(
        mac.finalize()
            .into_bytes()
            .iter()
            .fold(String::with_capacity(64), |mut hex, b| {
                use std::fmt::Write as _;
                let _ = write!(hex, "{b:02x}");
                hex
            }),
    )
}

/// A session cookie's value for `who` (the local operator or a user),
/// valid until `expires` (seconds since the epoch).
#[must_use]
pub fn session_value(auth: &Auth, who: &Identity, expires: u64) -> Option<String> {
    let name = match who {
        Identity::Local => String::new(),
        Identity::User { name, .. } => name.clone(),
        Identity::Nobody | Identity::Webhook => return None,
    };
    let payload = format!(
        "v1.{}.{expires}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
    );
    let mac = session_mac(&session_key(auth, who)?, &payload)?;
    Some(format!("{payload}.{mac}"))
}

/// Who a session cookie's value is for, if it is genuine and not expired.
#[must_use]
pub fn verify_session(auth: &Auth, value: &str, now: u64) -> Identity {
    let mut parts = value.split('.');
    let (Some("v1"), Some(name), Some(expires), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Identity::Nobody;
    };
    let Ok(expires_at) = expires.parse::<u64>() else {
        return Identity::Nobody;
    };
    let Some(name) = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(name)
        .ok()
        .and_then(|n| String::from_utf8(n).ok())
    else {
        return Identity::Nobody;
    };
    let who = if name.is_empty() {
        Identity::Local
    } else {
        match auth.users.iter().find(|u| u.name == name) {
            Some(u) => Identity::User {
                name: u.name.clone(),
                role: u.role,
            },
            None => return Identity::Nobody,
        }
    };
    let payload = value[..value.len() - mac.len() - 1].to_owned();
    let expected = session_key(auth, &who).and_then(|k| session_mac(&k, &payload));
    if expires_at > now && expected.is_some_and(|e| ct_eq(e.as_bytes(), mac.as_bytes())) {
        who
    } else {
        Identity::Nobody
    }
}

/// How a route is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: health checks, the sign-in page, the UI's static files.
    Public,
    /// The webhook's own credential rules.
    Webhook,
    /// A reader (any credential), unless reads are open.
    Read,
    /// An operator.
    Act,
}

fn access(method: &Method, path: &str) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/-/healthy" | "/-/ready" if read => Access::Public,
        "/login" | "/logout" => Access::Public,
        "/webhook" => Access::Webhook,
        // Plans compute what would run and change nothing.
        "/api/v1/plan" | "/plan" => Access::Read,
        // A manual run's plan is a read, the run itself a write: the
        // handler asks for an operator unless the body asks for a plan.
        p if is_trigger(p) => Access::Read,
        p if read && p.starts_with("/assets/") => Access::Public,
        _ if read => Access::Read,
        _ => Access::Act,
    }
}

/// `POST /api/v1/runbooks/{name}/runs` (API) or `/runbooks/{name}/runs` (UI).
fn is_trigger(path: &str) -> bool {
    let rest = path
        .strip_prefix("/api/v1/runbooks/")
        .or_else(|| path.strip_prefix("/runbooks/"));
    rest.and_then(|r| r.strip_suffix("/runs"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// A person's browser asking for a page (sent to `/login`, not given JSON).
fn wants_page(req: &Request) -> bool {
    req.method() == Method::GET
        && super::is_ui_path(req.uri().path())
        && req
            .headers()
            .get(header::AUTHORIZATION)
            .is_none_or(HeaderValue::is_empty)
}

tokio::task_local! {
    /// Who the request being served is from (set by [`gate`]): the UI's
    /// pages show write forms only to someone who may act.
    static WHO: Identity;
}

/// Whether the request being served may act (false outside a request).
#[must_use]
pub fn current_may_act() -> bool {
    WHO.try_with(Identity::may_act).unwrap_or(false)
}

/// Decides every request before its handler: identifies it, refuses what
/// its identity may not do, and hands the identity to the handler.
pub async fn gate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let who = identify(&s.auth(), req.headers());
    let refused = match access(req.method(), req.uri().path()) {
        Access::Public | Access::Webhook => None,
        Access::Read if !s.auth().protect_reads || who.may_read() => None,
        Access::Act if who.may_act() => None,
        Access::Read | Access::Act => Some(match &who {
            Identity::Nobody | Identity::Local => ApiError::Unauthorized,
            Identity::Webhook => ApiError::Forbidden(
                "the webhook's credential posts alerts and reads; acting needs an operator (docs/operators.md)".into(),
            ),
            Identity::User { name, role } => ApiError::Forbidden(format!(
                "`{name}` has the {} role; this needs an operator",
                role.as_str()
            )),
        }),
    };
    if let Some(e) = refused {
        if matches!(e, ApiError::Unauthorized) && wants_page(&req) {
            let next = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let to = format!(
                "/login?{}",
                serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
            );
            return Redirect::to(&to).into_response();
        }
        return e.into_response();
    }
    req.extensions_mut().insert(who.clone());
    WHO.scope(who, next.run(req)).await
}

/// Who may write: an operator (a viewer gets 403, nobody 401). The gate has
/// already refused anyone else; this names them for the record.
///
/// # Errors
/// 401 without an operator's credential, 403 for another role.
pub fn operator(who: Option<&axum::Extension<Identity>>) -> Result<Actor, ApiError> {
    match who.map(|w| &w.0) {
        Some(Identity::Local) => Ok(Actor::Local),
        Some(Identity::User {
            name,
            role: Role::Operator,
        }) => Ok(Actor::User(name.clone())),
        Some(Identity::User { name, role }) => Err(ApiError::Forbidden(format!(
            "`{name}` has the {} role; this needs an operator",
            role.as_str()
        ))),
        Some(Identity::Webhook | Identity::Nobody) | None => Err(ApiError::Unauthorized),
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

/// Where to go after signing in: a path of this site only.
fn local_next(next: Option<&str>) -> String {
    match next {
        // No whitespace or control character a browser would drop (`/\t/x`
        // becomes `//x`, another site), no `//` or `\\`.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q: LoginQuery = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    super::ui::login_page(&s, StatusCode::OK, None, &local_next(q.next.as_deref()))
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

impl super::FormToken for LoginForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The identity a sign-in form's fields name: a user's password or token,
/// or (without users) the local operator credential.
fn sign_in(auth: &Auth, user: &str, secret: &str) -> Identity {
    let secret = secret.trim();
    if secret.is_empty() {
        return Identity::Nobody;
    }
    let header = if user.trim().is_empty() {
        format!("Bearer {secret}")
    } else {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{secret}", user.trim()))
        )
    };
    match by_authorization(auth, &header) {
        // A user signs in with their token too, under their name.
        Identity::Nobody if !user.trim().is_empty() => {
            match by_authorization(auth, &format!("Bearer {secret}")) {
                Identity::User { name, role } if name == user.trim() => {
                    Identity::User { name, role }
                }
                _ => Identity::Nobody,
            }
        }
        // The webhook's credential is not a person's.
        Identity::Webhook => Identity::Nobody,
        who => who,
    }
}

async fn login(State(s): State<AppState>, body: axum::body::Body) -> Response {
    let f: LoginForm = match super::form(&s, body, 16 << 10).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let next = local_next(Some(&f.next));
    let who = sign_in(&s.auth(), &f.user, &f.secret);
    let expires = now_secs() + SESSION_TTL.as_secs();
    let Some(value) = session_value(&s.auth(), &who, expires) else {
        tracing::warn!(user = %f.user.escape_debug(), "a sign-in was refused");
        let why = if s.auth().users.is_empty() {
            "That is not the operator credential."
        } else {
            "Unknown user, or a wrong password or token."
        };
        return super::ui::login_page(&s, StatusCode::UNAUTHORIZED, Some(why), &next);
    };
    tracing::info!(who = ?who, "signed in");
    // `Secure` where people reach runbookd over https.
    let secure = if s.external_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("runbookd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// A credential file of runbookd's own in `dir`: read when it is there,
/// made (`0600`, 32 random bytes as hex) when it is not. Its directory is
/// the data directory, which steps cannot read.
///
/// # Errors
/// When it can be neither read nor made.
pub fn own_credential(dir: &Path, name: &str) -> anyhow::Result<(String, PathBuf)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let token = crate::exec::instance::random_hex(32)?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
            Ok((token, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            crate::secret::warn_if_shared(&path, "credential");
            let token = crate::secret::read_secret(&path, "credential")?;
            Ok((token, path))
        }
        Err(e) => Err(anyhow::anyhow!("cannot create `{}`: {e}", path.display())),
    }
}

/// The credentials this server takes: the configured ones, plus (without
/// `auth.users`) the local operator credential, and (without a configured
/// one) the webhook's, both made in the data directory at first start. A
/// post to the webhook is a write: steps, or anything a step can reach that
/// relays to this port (a local proxy, a port forward), must not make one,
/// so it always needs a credential.
pub(crate) fn credentials(
    cfg: &crate::config::ServerConfig,
    sandbox: &crate::exec::Sandbox,
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<crate::config::Auth> {
    // `addr`: at start, when where to sign in is logged; a reload is quiet.
    let quiet = addr.is_none();
    let mut auth = cfg.auth.clone();
    auth.session_key = match &auth.session_key_file {
        Some(p) => crate::secret::read_secret(p, "session key")?,
        None => own_credential(&cfg.data_dir, SESSION_KEY_FILE)?.0,
    };
    if auth.users.is_empty() {
        let (token, path) = own_credential(&cfg.data_dir, LOCAL_TOKEN_FILE)?;
        auth.local = Some(token);
        if let Some(addr) = addr {
            tracing::info!(
                credential = %path.display(),
                "no auth.users: the operator credential is in `{}` (the CLI reads it by itself); sign in to the web UI at http://{addr}/login with its contents",
                path.display()
            );
        }
    }
    if !auth.enabled() {
        let (token, path) = own_credential(&cfg.data_dir, WEBHOOK_TOKEN_FILE)?;
        auth.bearer = Some(token);
        auth.webhook_hint = format!(
            "without auth.bearer_token_file runbookd made one, `{}`: point Alertmanager's `http_config.authorization.credentials_file` at it",
            path.display()
        );
        if !quiet {
            tracing::info!(
                credential = %path.display(),
                "the webhook's credential is in `{}` (no auth.bearer_token_file): Alertmanager sends it with http_config.authorization.credentials_file",
                path.display()
            );
        }
    }
    if !quiet && !sandbox.guards_connections() {
        tracing::warn!("steps can connect to this port (runbookd is not root, or has no writable cgroup v2): they still need a credential for everything, which they cannot read");
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;

    fn auth() -> Auth {
        Auth {
            bearer: Some("hook".into()),
            users: vec![
                User {
                    name: "ana".into(),
                    password: Some("pw-ana".into()),
                    token: Some("ana-token".into()),
                    role: Role::Operator,
                },
                User {
                    name: "vic".into(),
                    password: Some("pw".into()),
                    token: None,
                    role: Role::Viewer,
                },
            ],
            ..Auth::default()
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn credentials_name_their_holder_and_nothing_else() {
        let a = auth();
        assert_eq!(identify(&a, &bearer("hook")), Identity::Webhook);
        assert_eq!(
            identify(&a, &bearer("ana-token")),
            Identity::User {
                name: "ana".into(),
                role: Role::Operator
            }
        );
        assert_eq!(identify(&a, &bearer("nope")), Identity::Nobody);
        assert_eq!(identify(&a, &HeaderMap::new()), Identity::Nobody);
        assert!(!Identity::Webhook.may_act() && Identity::Webhook.may_read());
        let local = Auth {
            local: Some("local-secret".into()),
            ..Auth::default()
        };
        assert_eq!(identify(&local, &bearer("local-secret")), Identity::Local);
        assert!(Identity::Local.may_act());
        assert_eq!(identify(&local, &bearer("")), Identity::Nobody);
    }

    #[test]
    fn sessions_are_signed_expire_and_end_with_their_credential() {
        let a = auth();
        let ana = Identity::User {
            name: "ana".into(),
            role: Role::Operator,
        };
        let v = session_value(&a, &ana, 1000).unwrap();
        assert_eq!(verify_session(&a, &v, 999), ana);
        assert_eq!(verify_session(&a, &v, 1000), Identity::Nobody, "expired");
        // Forged: another name, another expiry, a cut MAC.
        let forged = v.replacen(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ana"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("vic"),
            1,
        );
        assert_eq!(verify_session(&a, &forged, 1), Identity::Nobody);
        assert_eq!(
            verify_session(&a, &v.replacen(".1000.", ".9999.", 1), 1),
            Identity::Nobody
        );
        assert_eq!(verify_session(&a, &v[..v.len() - 2], 1), Identity::Nobody);
        let mut changed = a.clone();
        changed.users[0].password = Some("new".into());
        assert_eq!(verify_session(&changed, &v, 1), Identity::Nobody);
        let mut rekeyed = a.clone();
        rekeyed.session_key = "another server".into();
        assert_eq!(
            verify_session(&rekeyed, &v, 1),
            Identity::Nobody,
            "the server's key signs too"
        );
        assert!(session_value(&a, &Identity::Webhook, 1000).is_none());
        let local = Auth {
            local: Some("s".into()),
            ..Auth::default()
        };
        let lv = session_value(&local, &Identity::Local, 50).unwrap();
        assert_eq!(verify_session(&local, &lv, 1), Identity::Local);
        assert_eq!(verify_session(&a, &lv, 1), Identity::Nobody);
    }

    #[test]
    fn every_route_is_guarded_unless_listed_public() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(access(&get, "/-/healthy"), Access::Public);
        assert_eq!(access(&post, "/-/reload"), Access::Act);
        assert_eq!(access(&get, "/metrics"), Access::Read);
        assert_eq!(access(&get, "/api/v1/incidents"), Access::Read);
        assert_eq!(access(&post, "/api/v1/plan"), Access::Read);
        assert_eq!(access(&post, "/api/v1/runbooks/disk/runs"), Access::Read);
        assert_eq!(access(&post, "/api/v1/runbooks/a/b/runs"), Access::Act);
        assert_eq!(access(&post, "/api/v1/some-new-write"), Access::Act);
        assert_eq!(access(&Method::DELETE, "/anything"), Access::Act);
        assert_eq!(access(&post, "/webhook"), Access::Webhook);
        assert_eq!(access(&get, "/assets/ui.css"), Access::Public);
        assert_eq!(access(&post, "/assets/ui.css"), Access::Act);
    }

    #[test]
    fn sign_in_takes_a_persons_credential_never_the_webhooks() {
        let a = auth();
        assert_eq!(sign_in(&a, "", "hook"), Identity::Nobody);
        assert_eq!(sign_in(&a, "ana", "hook"), Identity::Nobody);
        assert!(matches!(
            sign_in(&a, "ana", "pw-ana"),
            Identity::User { .. }
        ));
        assert!(matches!(
            sign_in(&a, "ana", "ana-token"),
            Identity::User { .. }
        ));
        assert_eq!(sign_in(&a, "vic", "ana-token"), Identity::Nobody);
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        assert_eq!(local_next(Some("/\t/evil.example")), "/");
        assert_eq!(local_next(Some("/\\evil.example")), "/");
        assert_eq!(
            local_next(Some("/incidents/INC-0001")),
            "/incidents/INC-0001"
        );
    }
}
