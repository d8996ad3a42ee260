//! Server settings: from a YAML file (`--config`), overridden by flags and
//! environment variables, checked before anything starts. Secrets are read
//! from files, never given on the command line.

pub use crate::secret::{read_secret, warn_if_shared};
pub use crate::shared::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exec::{SandboxConfig, SpawnerConfig};

/// The settings file, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub runbooks: Option<PathBuf>,
    /// The SLO files' directory (Sloth or OpenSLO; docs/slos.md).
    pub slos: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// `sqlite:PATH` (default `sqlite:DATA_DIR/runbookd.db`) or `postgres://…`.
    pub store: Option<String>,
    #[serde(default)]
    pub cluster: ClusterFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub limits: LimitsFile,
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub sandbox: SandboxFile,
    #[serde(default)]
    pub http: HttpFile,
    /// Where people reach this runbookd (links in notifications), e.g.
    /// `https://runbookd.example.com`.
    pub external_url: Option<String>,
    /// Named notification targets (docs/notifications.md).
    #[serde(default)]
    pub notifiers: std::collections::BTreeMap<String, crate::notify::config::NotifierFile>,
    /// The Alertmanager `silence:` steps silence through.
    pub alertmanager: Option<AlertmanagerFile>,
    /// The Prometheus SLO status comes from.
    pub prometheus: Option<PrometheusFile>,
}

impl PrometheusFile {
    /// The client these settings describe.
    ///
    /// # Errors
    /// A bad URL, duration, header or unreadable token file.
    pub fn client(&self) -> anyhow::Result<crate::prometheus::Prometheus> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("bad `prometheus.url`: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "bad `prometheus.url`: an http(s) URL is needed"
        );
        // It is shown (pages, API, errors, logs): no credentials in it.
        anyhow::ensure!(
            url.username().is_empty() && url.password().is_none(),
            "bad `prometheus.url`: no user or password in it (it is shown on pages and in logs); use `bearer_token_file` or `headers`"
        );
        let bearer = self
            .bearer_token_file
            .as_deref()
            .map(|f| read_secret(f, "Prometheus bearer token"))
            .transpose()?;
        let timeout = duration(
            self.timeout.as_deref(),
            Duration::from_secs(10),
            "prometheus.timeout",
        )?;
        crate::prometheus::Prometheus::new(url, &self.headers, bearer.as_deref(), timeout)
            .map_err(|e| anyhow::anyhow!("bad `prometheus`: {e}"))
    }
}

/// `prometheus:` in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusFile {
    /// e.g. `http://127.0.0.1:9090` (`/api/v1/query` below it; Thanos and
    /// Mimir too).
    pub url: String,
    /// Sent with every query (e.g. `X-Scope-OrgID` for Mimir).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// Per query [default: 10s].
    pub timeout: Option<String>,
    /// How often SLO status is read again [default: 1m].
    pub refresh: Option<String>,
}

/// `alertmanager:` in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerFile {
    /// e.g. `http://127.0.0.1:9093` (API v2 below it).
    pub url: String,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// How long Alertmanager must have been up before an `until: resolved`
    /// silence's alert that it no longer holds counts as resolved (after a
    /// restart it learns firing alerts again as Prometheus resends them).
    pub restart_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Host header values accepted (DNS rebinding); empty: any when listening
    /// beyond loopback, loopback names when listening on loopback.
    pub allowed_hosts: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub request_timeout: Option<String>,
}

/// Several replicas on one PostgreSQL store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// This replica's name (default `HOSTNAME:PID`), recorded as the owner
    /// of the runs it executes.
    pub replica: Option<String>,
    /// How long a claimed run is held without a heartbeat (default 15s).
    pub lease: Option<String>,
    /// Steps all replicas together may run at once (default: no cap beyond
    /// each replica's `limits.max_concurrent_steps`).
    pub max_concurrent_steps: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// File holding the token Alertmanager sends as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// `basic_auth` as Alertmanager's http_config sends it.
    pub basic_auth: Option<BasicAuthFile>,
    /// Require credentials (a user's, the operator credential's or the
    /// webhook's) to read the API, the UI and `/metrics` (default: true).
    #[serde(default = "yes")]
    pub protect_reads: bool,
    /// People: who may read, who may act (docs/operators.md).
    #[serde(default)]
    pub users: Vec<UserFile>,
    /// The key browser sessions are signed with (default: one runbookd
    /// makes in the data directory); replicas that share it accept each
    /// other's sessions.
    pub session_key_file: Option<PathBuf>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            bearer_token_file: None,
            basic_auth: None,
            protect_reads: true,
            users: Vec::new(),
            session_key_file: None,
        }
    }
}

/// One of `auth.users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    /// For basic auth (a browser, `curl -u`).
    pub password_file: Option<PathBuf>,
    /// For `Authorization: Bearer …` (scripts, the CLI).
    pub token_file: Option<PathBuf>,
    pub role: Role,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads incidents, runbooks, notifications.
    Viewer,
    /// Also acts: updates, acknowledgements, retries, reloads.
    Operator,
}

impl std::fmt::Debug for User {
    /// Without the password or token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// A person who may use the API and the UI.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub password: Option<String>,
    pub token: Option<String>,
    pub role: Role,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthFile {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub body_bytes: Option<usize>,
    pub max_queued_runs: Option<u64>,
    pub max_concurrent_steps: Option<u32>,
    /// `10/5m`: runs of all runbooks for alerts per window; more are skipped.
    pub run_rate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxFile {
    pub run_as: Option<String>,
    pub allow_root_steps: Option<bool>,
    pub strict: Option<bool>,
    pub kill_grace: Option<String>,
    /// Default `resources.pids` of steps; 0 for none.
    pub default_pids: Option<u64>,
    /// Where instance locks and run scratch directories live.
    pub runtime_dir: Option<PathBuf>,
    /// Who starts steps: the spawn helper (default) or runbookd itself.
    pub spawner: Option<SpawnerChoice>,
    /// The size of the steps' scratch `tmpfs` (as root), e.g. `1Gi`; `0`
    /// for none (scratch on the runtime directory's filesystem).
    pub scratch_size: Option<String>,
}

/// `sandbox.spawner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnerChoice {
    /// A small single-threaded helper process started once forks every step.
    Helper,
    /// runbookd forks every step itself (slower under load; see docs/benchmarks.md).
    Inline,
}

fn yes() -> bool {
    true
}

/// Credentials accepted on the webhook, the API and the UI (see
/// [`crate::api::auth`]).
#[derive(Clone)]
pub struct Auth {
    /// The webhook's bearer token: configured, or made by runbookd when
    /// its steps could reach its port.
    pub bearer: Option<String>,
    pub basic: Option<(String, String)>,
    /// Reads need a credential (`auth.protect_reads`, on by default).
    pub protect_reads: bool,
    /// `auth.users`.
    pub users: Vec<User>,
    /// Without users: the local operator credential (the data directory's
    /// `operator.token`), set at start.
    pub local: Option<String>,
    /// Where the webhook's credential comes from, for a refusal's message.
    pub webhook_hint: String,
    /// The server's own key, mixed into every session's signing key (so a
    /// stolen cookie is no offline test of a user's password), set at start.
    pub session_key: String,
    /// `auth.session_key_file`.
    pub session_key_file: Option<PathBuf>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            bearer: None,
            basic: None,
            protect_reads: true,
            users: Vec::new(),
            local: None,
            webhook_hint: String::new(),
            session_key: String::new(),
            session_key_file: None,
        }
    }
}

impl std::fmt::Debug for Auth {
    /// Without any secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("webhook_bearer", &self.bearer.is_some())
            .field("webhook_basic", &self.basic.is_some())
            .field("protect_reads", &self.protect_reads)
            .field("users", &self.users)
            .field("local", &self.local.is_some())
            .field("webhook_hint", &self.webhook_hint)
            .field("session_key_file", &self.session_key_file)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Whether the webhook needs a credential.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.bearer.is_some() || self.basic.is_some()
    }
}

/// The checked server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub runbooks: PathBuf,
    /// The SLO files' directory, loaded and reloaded with the runbooks.
    pub slos: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `None`: the SQLite file in `data_dir` (see [`ServerConfig::store`]).
    pub store: Option<crate::store::StoreUrl>,
    /// This replica's name, lease and the cluster's cap.
    pub replica: String,
    pub lease: Duration,
    pub cluster_max_concurrent_steps: u32,
    pub auth: Auth,
    pub body_limit: usize,
    pub max_queued_runs: u64,
    /// `limits.run_rate`: at most this many runs (of all runbooks, for
    /// alerts) per window; more are recorded `skipped`.
    pub run_rate: Option<crate::duration::Rate>,
    pub max_concurrent_steps: u32,
    pub shutdown_grace: Duration,
    pub kill_grace: Duration,
    pub sandbox: SandboxConfig,
    /// Shadow mode (`serve --plan`): record incidents and plans, execute nothing.
    pub shadow: bool,
    pub http: HttpConfig,
    /// The base of links in notifications; `http://LISTEN` when not set.
    pub external_url: String,
    pub notifiers: std::sync::Arc<crate::notify::config::Notifiers>,
    /// Where `silence:` steps make their silences.
    pub alertmanager: Option<crate::alertmanager::Alertmanager>,
    /// Where SLO status comes from, and how often it is read.
    pub prometheus: Option<crate::prometheus::Prometheus>,
    pub slo_refresh: Duration,
    /// The file (and flags) this came from, read again on reload (SIGHUP).
    pub source: Option<ConfigSource>,
    /// What time it is for drills' schedules and `requires:` (the system
    /// clock; a test sets another).
    pub clock: crate::clock::SharedClock,
}

/// Where a server config came from, to read it again on reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: PathBuf,
    pub overrides: Overrides,
}

impl ServerConfig {
    /// The settings a reload cannot change (they shape what is already
    /// running), as `(key, value)`: a reload that changes one says to
    /// restart.
    #[must_use]
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        vec![
            ("listen", self.listen.to_string()),
            ("runbooks", self.runbooks.display().to_string()),
            ("slos", format!("{:?}", self.slos)),
            ("data_dir", self.data_dir.display().to_string()),
            ("store", self.store().to_string()),
            ("cluster.replica", self.replica.clone()),
            ("cluster.lease", format!("{:?}", self.lease)),
            (
                "limits.max_concurrent_steps",
                self.max_concurrent_steps.to_string(),
            ),
            ("limits.body_bytes", self.body_limit.to_string()),
            ("shutdown_grace", format!("{:?}", self.shutdown_grace)),
            (
                "sandbox",
                format!("{:?} {:?}", self.sandbox, self.kill_grace),
            ),
            ("http", format!("{:?}", self.http)),
            ("external_url", self.external_url.clone()),
            (
                "prometheus",
                format!("{:?} {:?}", self.prometheus, self.slo_refresh),
            ),
        ]
    }
}

/// Connection hygiene of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Accepted `Host` header values (host or host:port, lower case); `None`
    /// accepts any.
    pub allowed_hosts: Option<Vec<String>>,
    /// Connections open at once; past it the oldest idle one is closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this long (also the
    /// idle time allowed between requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// A request's body must arrive within this long.
    pub request_timeout: Duration,
}

/// Overrides from flags and environment (clap fills these).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub runbooks: Option<PathBuf>,
    pub slos: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<crate::store::StoreUrl>,
    pub replica: Option<String>,
    pub lease: Option<Duration>,
    pub run_as: Option<String>,
    pub allow_root_steps: Option<bool>,
    pub strict_sandbox: Option<bool>,
    pub kill_grace: Option<Duration>,
    pub shadow: bool,
}

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9095);

/// `HOSTNAME:PID`: unique among live replicas, readable in timelines.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{}:{}",
        if host.is_empty() { "runbookd" } else { &host },
        std::process::id()
    )
}

fn duration(s: Option<&str>, default: Duration, what: &str) -> anyhow::Result<Duration> {
    s.map_or(Ok(default), |s| {
        crate::duration::parse(s).map_err(|e| anyhow::anyhow!("bad `{what}`: {e}"))
    })
}

impl ServerConfig {
    /// Reads `file` (if any) and applies the overrides.
    ///
    /// # Errors
    /// An unreadable or invalid file, a missing secret, a bad value.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<ServerConfig> {
        let source = file.map(|p| ConfigSource {
            file: p.to_owned(),
            overrides: o.clone(),
        });
        let f: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read config `{}`: {e}", p.display()))?;
                serde_yaml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config `{}`: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let auth = Auth {
            bearer: f
                .auth
                .bearer_token_file
                .as_deref()
                .map(|p| read_secret(p, "bearer token"))
                .transpose()?,
            basic: f
                .auth
                .basic_auth
                .as_ref()
                .map(|b| {
                    Ok::<_, anyhow::Error>((
                        b.username.clone(),
                        read_secret(&b.password_file, "basic auth password")?,
                    ))
                })
                .transpose()?,
            protect_reads: f.auth.protect_reads,
            local: None,
            session_key: String::new(),
            session_key_file: f.auth.session_key_file.clone(),
            webhook_hint: match (&f.auth.bearer_token_file, &f.auth.basic_auth) {
                (Some(p), _) => format!("the token in `{}`", p.display()),
                (None, Some(b)) => format!("basic auth as `{}`", b.username),
                (None, None) => String::new(),
            },
            users: f
                .auth
                .users
                .iter()
                .map(|u| {
                    anyhow::ensure!(
                        !u.name.trim().is_empty()
                            && u.name.len() <= 64
                            && !u.name.chars().any(|c| c.is_control() || c == ':'),
                        "auth.users: bad user name `{}`: 1 to 64 characters, no `:` or control characters",
                        u.name
                    );
                    anyhow::ensure!(
                        u.password_file.is_some() || u.token_file.is_some(),
                        "auth.users: `{}` needs a password_file or a token_file",
                        u.name
                    );
                    Ok(User {
                        name: u.name.clone(),
                        password: u
                            .password_file
                            .as_deref()
                            .map(|p| read_secret(p, "user password"))
                            .transpose()?,
                        token: u
                            .token_file
                            .as_deref()
                            .map(|p| read_secret(p, "user token"))
                            .transpose()?,
                        role: u.role,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        {
            let mut names: Vec<&str> = auth.users.iter().map(|u| u.name.as_str()).collect();
            names.sort_unstable();
            if let Some([twice, _]) = names.windows(2).find(|w| w[0] == w[1]) {
                anyhow::bail!("auth.users: `{twice}` is listed twice");
            }
        }
        let data_dir: PathBuf = o.data_dir.or(f.data_dir).unwrap_or_else(|| "data".into());
        // A config file naming a store with its password is a secret.
        if let (Some(p), Some(url)) = (file, &f.store) {
            if url.starts_with("postgres")
                && url.contains('@')
                && url
                    .split('@')
                    .next()
                    .is_some_and(|u| u.matches(':').count() >= 2)
            {
                warn_if_shared(p, "config file holding the store's password");
            }
        }
        let store = match (o.store, f.store) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(s.parse().map_err(|e| anyhow::anyhow!("bad `store`: {e}"))?),
            (None, None) => None,
        };
        // Steps may not read the store, this file or the secrets it names.
        let mut hidden = vec![data_dir.clone()];
        if let Some(crate::store::StoreUrl::Sqlite(path)) = &store {
            hidden.extend(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_owned),
            );
        }
        hidden.extend(file.map(Path::to_owned));
        hidden.extend(f.auth.bearer_token_file.clone());
        hidden.extend(f.auth.session_key_file.clone());
        hidden.extend(f.auth.basic_auth.as_ref().map(|b| b.password_file.clone()));
        hidden.extend(
            f.auth
                .users
                .iter()
                .flat_map(|u| [u.password_file.clone(), u.token_file.clone()])
                .flatten(),
        );
        hidden.extend(f.notifiers.values().flat_map(|n| n.secret_files().cloned()));
        hidden.extend(
            f.alertmanager
                .as_ref()
                .and_then(|a| a.bearer_token_file.clone()),
        );
        let alertmanager = match &f.alertmanager {
            None => None,
            Some(a) => {
                let url = reqwest::Url::parse(&a.url)
                    .map_err(|e| anyhow::anyhow!("bad `alertmanager.url`: {e}"))?;
                anyhow::ensure!(
                    matches!(url.scheme(), "http" | "https"),
                    "bad `alertmanager.url`: an http(s) URL is needed"
                );
                let bearer = a
                    .bearer_token_file
                    .as_deref()
                    .map(|p| read_secret(p, "Alertmanager bearer token"))
                    .transpose()?;
                let mut am = crate::alertmanager::Alertmanager::new(url, bearer)
                    .map_err(|e| anyhow::anyhow!(e))?;
                am.restart_grace = duration(
                    a.restart_grace.as_deref(),
                    am.restart_grace,
                    "alertmanager.restart_grace",
                )?;
                Some(am)
            }
        };
        hidden.extend(
            f.prometheus
                .as_ref()
                .and_then(|p| p.bearer_token_file.clone()),
        );
        let prometheus = f
            .prometheus
            .as_ref()
            .map(PrometheusFile::client)
            .transpose()?;
        let slo_refresh = duration(
            f.prometheus.as_ref().and_then(|p| p.refresh.as_deref()),
            Duration::from_secs(60),
            "prometheus.refresh",
        )?;
        anyhow::ensure!(
            slo_refresh >= Duration::from_secs(5),
            "bad `prometheus.refresh`: at least 5s"
        );
        let notifiers = f
            .notifiers
            .iter()
            .map(|(name, n)| Ok((name.clone(), n.check(name)?)))
            .collect::<anyhow::Result<crate::notify::config::Notifiers>>()?;
        let defaults = SandboxConfig::default();
        let sandbox = SandboxConfig {
            run_as: o.run_as.or(f.sandbox.run_as).unwrap_or(defaults.run_as),
            allow_root_steps: o
                .allow_root_steps
                .or(f.sandbox.allow_root_steps)
                .unwrap_or(false),
            strict: o.strict_sandbox.or(f.sandbox.strict).unwrap_or(false),
            path: defaults.path,
            default_pids: match f.sandbox.default_pids {
                Some(0) => None,
                Some(n) => Some(n),
                None => defaults.default_pids,
            },
            runtime_dir: f.sandbox.runtime_dir.unwrap_or(defaults.runtime_dir),
            hidden,
            secret_files: Vec::new(),
            guarded_ports: Vec::new(),
            scratch_size: match f.sandbox.scratch_size.as_deref() {
                None => defaults.scratch_size,
                Some("0") => None,
                Some(s) => Some(
                    crate::runbook::parse_memory(s)
                        .map_err(|e| anyhow::anyhow!("bad `sandbox.scratch_size`: {e}"))?,
                ),
            },
            spawner: match f.sandbox.spawner {
                Some(SpawnerChoice::Inline) => SpawnerConfig::Inline,
                Some(SpawnerChoice::Helper) | None => defaults.spawner,
            },
        };
        let listen = o.listen.or(f.listen).unwrap_or(DEFAULT_LISTEN);
        let allowed_hosts = match f.http.allowed_hosts {
            Some(hosts) => Some(hosts.iter().map(|h| h.to_ascii_lowercase()).collect()),
            // On loopback only local clients reach us, and only a page
            // served under another name (DNS rebinding) sends another Host.
            None if listen.ip().is_loopback() => Some(
                ["localhost", "127.0.0.1", "[::1]", "::1"]
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
            ),
            None => None,
        };
        let http = HttpConfig {
            allowed_hosts,
            max_connections: f.http.max_connections.unwrap_or(512),
            header_timeout: duration(
                f.http.header_timeout.as_deref(),
                Duration::from_secs(10),
                "http.header_timeout",
            )?,
            request_timeout: duration(
                f.http.request_timeout.as_deref(),
                Duration::from_secs(30),
                "http.request_timeout",
            )?,
        };
        anyhow::ensure!(
            http.max_connections >= 8,
            "http.max_connections must be at least 8"
        );
        let cfg = ServerConfig {
            listen,
            runbooks: o
                .runbooks
                .or(f.runbooks)
                .unwrap_or_else(|| "runbooks".into()),
            slos: o.slos.or(f.slos),
            data_dir,
            store,
            replica: o
                .replica
                .or(f.cluster.replica)
                .unwrap_or_else(default_replica),
            lease: match o.lease {
                Some(d) => d,
                None => duration(
                    f.cluster.lease.as_deref(),
                    Duration::from_secs(15),
                    "cluster.lease",
                )?,
            },
            cluster_max_concurrent_steps: f.cluster.max_concurrent_steps.unwrap_or(u32::MAX),
            auth,
            body_limit: f.limits.body_bytes.unwrap_or(1 << 20),
            max_queued_runs: f.limits.max_queued_runs.unwrap_or(10_000),
            run_rate: f
                .limits
                .run_rate
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| anyhow::anyhow!("bad `limits.run_rate`: {e}"))?,
            max_concurrent_steps: f.limits.max_concurrent_steps.unwrap_or(16),
            shutdown_grace: duration(
                f.shutdown_grace.as_deref(),
                Duration::from_secs(30),
                "shutdown_grace",
            )?,
            kill_grace: match o.kill_grace {
                Some(d) => d,
                None => duration(
                    f.sandbox.kill_grace.as_deref(),
                    Duration::from_secs(5),
                    "sandbox.kill_grace",
                )?,
            },
            sandbox,
            shadow: o.shadow,
            http,
            external_url: match f.external_url.as_deref() {
                Some(u) => {
                    let url = reqwest::Url::parse(u)
                        .map_err(|e| anyhow::anyhow!("bad `external_url`: {e}"))?;
                    anyhow::ensure!(
                        matches!(url.scheme(), "http" | "https"),
                        "bad `external_url`: an http(s) URL is needed"
                    );
                    u.trim_end_matches('/').to_owned()
                }
                None => format!("http://{listen}"),
            },
            notifiers: std::sync::Arc::new(notifiers),
            alertmanager,
            prometheus,
            slo_refresh,
            source,
            clock: crate::clock::system(),
        };
        anyhow::ensure!(
            cfg.body_limit >= 1024,
            "limits.body_bytes must be at least 1024"
        );
        anyhow::ensure!(
            cfg.max_concurrent_steps >= 1,
            "limits.max_concurrent_steps must be at least 1"
        );
        // Leases only matter to replicas sharing a PostgreSQL store.
        let shared = matches!(cfg.store, Some(crate::store::StoreUrl::Postgres(_)));
        anyhow::ensure!(
            !shared || cfg.lease >= cfg.fence_margin() + cfg.lease / 3 + Duration::from_millis(500),
            "cluster.lease ({}) is too short for sandbox.kill_grace ({}): a replica that cannot renew its leases must be able to stop its steps before they expire; make it at least 2 × the kill grace + 1s",
            humantime::format_duration(cfg.lease),
            humantime::format_duration(cfg.kill_grace)
        );
        anyhow::ensure!(
            cfg.cluster_max_concurrent_steps >= 1,
            "cluster.max_concurrent_steps must be at least 1"
        );
        Ok(cfg)
    }

    /// The store: `--store`, or the SQLite file in the data directory.
    #[must_use]
    pub fn store(&self) -> crate::store::StoreUrl {
        self.store
            .clone()
            .unwrap_or_else(|| crate::store::StoreUrl::Sqlite(self.data_dir.join("runbookd.db")))
    }

    /// How long before an unrenewed lease expires a replica stops its steps:
    /// the kill grace (so they are dead by then) and a sixth of the lease.
    #[must_use]
    pub fn fence_margin(&self) -> Duration {
        self.kill_grace + self.lease / 6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flags_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2").unwrap();
        let cfg = dir.path().join("runbookd.yaml");
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:9999\nauth:\n  bearer_token_file: {0}/token\n  basic_auth: {{username: am, password_file: {0}/pw}}\nlimits: {{body_bytes: 2048, max_queued_runs: 5}}\nshutdown_grace: 3s\nsandbox: {{run_as: daemon, kill_grace: 1s}}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let c = ServerConfig::load(
            Some(&cfg),
            Overrides {
                listen: Some("127.0.0.1:1234".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234, "a flag beats the file");
        assert_eq!(
            c.auth.bearer.as_deref(),
            Some("t0ken"),
            "the trailing newline is not part of the secret"
        );
        assert_eq!(c.auth.basic, Some(("am".into(), "hunter2".into())));
        assert_eq!(
            (c.body_limit, c.max_queued_runs, c.max_concurrent_steps),
            (2048, 5, 16)
        );
        assert_eq!(
            (c.shutdown_grace, c.kill_grace),
            (Duration::from_secs(3), Duration::from_secs(1))
        );
        assert_eq!(c.sandbox.run_as, "daemon");
        assert_eq!(
            ServerConfig::load(None, Overrides::default())
                .unwrap()
                .listen,
            DEFAULT_LISTEN
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("listen: 127.0.0.1:1\nlisen: x\n", "unknown field `lisen`"),
            (
                "auth: {bearer_token_file: /nonexistent/token}\n",
                "cannot read bearer token file `/nonexistent/token`",
            ),
            (
                "shutdown_grace: soon\n",
                "bad `shutdown_grace`: not a valid duration `soon`",
            ),
            (
                "limits: {body_bytes: 10}\n",
                "body_bytes must be at least 1024",
            ),
            (
                "prometheus: {url: 'http://ops:hunter2@127.0.0.1:9090'}\n",
                "bad `prometheus.url`: no user or password in it",
            ),
            (
                "prometheus: {url: 'http://127.0.0.1:9090', refresh: 1s}\n",
                "bad `prometheus.refresh`: at least 5s",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("c{i}.yaml"));
            std::fs::write(&p, text).unwrap();
            let err = format!(
                "{:#}",
                ServerConfig::load(Some(&p), Overrides::default()).unwrap_err()
            );
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let empty = dir.path().join("empty-token");
        std::fs::write(&empty, "\n").unwrap();
        let p = dir.path().join("e.yaml");
        std::fs::write(
            &p,
            format!("auth: {{bearer_token_file: {}}}\n", empty.display()),
        )
        .unwrap();
        assert!(format!(
            "{:#}",
            ServerConfig::load(Some(&p), Overrides::default()).unwrap_err()
        )
        .contains("is empty"));
    }
}
