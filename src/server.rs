//! `runbookd serve`, wired: store (with crash recovery), runbooks, sandbox,
//! dispatcher, HTTP. [`start`] is what the binary and the tests run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::ServerConfig;
use crate::dispatch::Dispatcher;
use crate::exec::run::Executor;
use crate::exec::{ExecSettings, Sandbox};
use crate::metrics::Metrics;
use crate::runbook::{self, LoadErrors};
use crate::store::{self, Store, StoreUrl};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid runbooks, refusing to start:\n{0}")]
    Runbooks(LoadErrors),
    #[error("invalid SLO files, refusing to start:\n{0}")]
    Slos(crate::slo::SloErrors),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: CancellationToken,
    done: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, lets running steps finish within the grace period,
    /// then kills them (recorded `interrupted`), and closes the store.
    ///
    /// # Errors
    /// When serving failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.done.await.context("the server task failed")?
    }

    /// Waits until the server stops by itself (after `stop_on` fired).
    ///
    /// # Errors
    /// When serving failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("the server task failed")?
    }

    /// A token that stops the server when cancelled.
    #[must_use]
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Makes the data directory 0700, or tightens an existing one.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir `{}`", dir.display()))?;
    restrict(dir, 0o700);
    Ok(())
}

/// Refuses a directory that others may use for a SQLite store named by
/// hand: steps cannot see anything in it, and its files hold every alert.
fn own_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the store's directory `{}`", dir.display()))?;
    anyhow::ensure!(
        meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode().trailing_zeros() >= 6,
        "the SQLite store's directory `{}` must belong to runbookd's user with no access for others (mode 0700): steps cannot see anything in it, so give the store a directory of its own, e.g. /var/lib/runbookd/runbookd.db",
        dir.display()
    );
    Ok(())
}

/// Removes group and other access from `path`, saying so when it had any.
fn restrict(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let old = meta.permissions().mode() & 0o777;
    if old & 0o077 != 0 {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), old = format!("{old:04o}"), new = format!("{mode:04o}"), "the store was readable by other users; tightened");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the store is readable by other users and cannot be tightened");
            }
        }
    }
}

/// Starts the server: everything is ready when this returns.
///
/// # Errors
/// Invalid runbooks (every error listed), an unusable store, sandbox or address.
pub async fn start(cfg: ServerConfig) -> Result<Running, StartError> {
    let set = runbook::load_dir(&cfg.runbooks).map_err(StartError::Runbooks)?;
    crate::notify::config::check_refs(&set, &cfg.notifiers).map_err(StartError::Runbooks)?;
    let slos = crate::slo::load_configured(cfg.slos.as_deref()).map_err(StartError::Slos)?;
    let configured: Vec<&str> = cfg.notifiers.keys().map(String::as_str).collect();
    slos.check_notifiers(&configured)
        .map_err(StartError::Slos)?;
    slos.check_runbook_refs(&set)
        .map_err(StartError::Runbooks)?;
    for w in set.warnings() {
        tracing::warn!("{w}");
    }
    let url = cfg.store();
    // The data directory is runbookd's own (the store by default, its
    // credentials): made, or tightened to, 0700.
    private_dir(&cfg.data_dir)?;
    if let (Some(_), StoreUrl::Sqlite(db)) = (&cfg.store, &url) {
        // A store path chosen by hand: its directory is hidden from steps,
        // so it must be one runbookd owns alone; runbookd makes it when
        // missing but never tightens a directory others use.
        let dir = db
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if dir.exists() {
            own_private_dir(dir)?;
        } else {
            private_dir(dir)?;
        }
    }
    let store = Store::open(&url).await.map_err(|e| match e {
        e @ store::StoreError::Locked { .. } => anyhow::anyhow!(e),
        e => anyhow::anyhow!(e).context(format!("cannot open the store `{url}`")),
    })?;
    if let StoreUrl::Sqlite(db) = &url {
        for suffix in ["", "-wal", "-shm"] {
            let mut f = db.as_os_str().to_owned();
            f.push(suffix);
            restrict(Path::new(&f), 0o600);
        }
    }
    // One process holds a SQLite store: whatever is running there is this
    // process's leftover. Replicas on PostgreSQL leave that to the lease.
    if store.sharing() == store::Sharing::Exclusive {
        let reaped = store
            .reap(store::Reap::All {
                why: "runbookd stopped while the run was executing".into(),
            })
            .await
            .context("cannot recover the store")?;
        if reaped.interrupted > 0 {
            tracing::warn!(
                runs = reaped.interrupted,
                "runs that were executing when runbookd stopped are marked interrupted"
            );
        }
        if reaped.requeued > 0 {
            tracing::warn!(
                runs = reaped.requeued,
                "idempotent runs that were executing when runbookd stopped are queued again"
            );
        }
    }
    // Bound first: steps are kept from connecting to this port.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // Secret files named by runbooks are as unreadable to steps as the store.
    let mut sandbox_cfg = cfg.sandbox.clone();
    sandbox_cfg.secret_files = set.secret_files();
    sandbox_cfg.guarded_ports = vec![addr.port()];
    let sandbox = Sandbox::new(sandbox_cfg).context("cannot set up the step sandbox")?;
    // Steps of runbookd's own user (or root) without Landlock could read its
    // store and credentials, and with them act as an operator.
    if sandbox
        .identity(crate::exec::sandbox::RunAs::Default)
        .is_none()
        && sandbox.probe.landlock_abi == 0
    {
        return Err(StartError::Other(anyhow::anyhow!(
            "steps would run as runbookd's own user (or root) on a kernel without Landlock, so nothing would keep them from reading runbookd's store and credentials: run runbookd as root without allow_root_steps (steps drop to `run_as`), or on a kernel with Landlock (Linux 5.13+)"
        )));
    }
    let auth = crate::api::auth::credentials(&cfg, &sandbox, Some(addr))?;
    let alertmanager = crate::silence::Alertmanagers::new(cfg.alertmanager.clone());
    let notifiers = crate::shared::Shared::new(cfg.notifiers.clone());
    let slos = Arc::new(std::sync::RwLock::new(Arc::new(slos)));
    let slo_status = crate::slo::refresh::Shared::default();
    // Overrides in force before the first step asks a gate.
    crate::slo::refresh::sync_overrides(&store, &slo_status).await;
    let executor = Arc::new(Executor {
        gates: Some(api::gates::source(
            slos.clone(),
            slo_status.clone(),
            cfg.prometheus.is_some(),
        )),
        slos: Some(slos.clone()),
        integrations: crate::integrations::Integrations::new(
            alertmanager.in_force(),
            cfg.prometheus
                .clone()
                .map(|p| Arc::new(p) as Arc<dyn crate::integrations::Metrics>),
        ),
        sandbox,
        settings: ExecSettings {
            kill_grace: cfg.kill_grace,
            ..ExecSettings::default()
        },
    });
    let runbooks = Arc::new(RwLock::new(Arc::new(set)));
    let metrics = Arc::new(Metrics::default());
    let dispatcher = Dispatcher::new(
        store.clone(),
        executor,
        runbooks.clone(),
        metrics.clone(),
        cfg.max_concurrent_steps,
        cfg.shadow,
        crate::dispatch::Replica {
            name: cfg.replica.clone(),
            lease: cfg.lease,
            fence_margin: cfg.fence_margin(),
            cluster_max: cfg.cluster_max_concurrent_steps,
        },
    );
    let mut http = cfg.http.clone();
    http.max_connections = api::listener::descriptor_budget(
        http.max_connections,
        u64::from(cfg.max_concurrent_steps) * 16 + 256,
    );
    if !cfg.listen.ip().is_loopback() && !auth.enabled() {
        tracing::warn!(listen = %cfg.listen, "listening beyond loopback with no webhook credential: anyone who can reach this address can post alerts; set auth.bearer_token_file or auth.basic_auth");
    }
    let csrf: Arc<str> = crate::exec::instance::random_hex(32)
        .context("cannot read /dev/urandom")?
        .into();
    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        runbooks,
        runbooks_dir: cfg.runbooks.clone(),
        slos,
        slo_status,
        forecasts: crate::capacity::read::Shared::default(),
        prometheus: cfg.prometheus.clone(),
        auth: Arc::new(std::sync::RwLock::new(Arc::new(auth))),
        body_limit: cfg.body_limit,
        max_queued_runs: Arc::new(std::sync::atomic::AtomicU64::new(cfg.max_queued_runs)),
        run_rate: Arc::new(std::sync::RwLock::new(cfg.run_rate)),
        metrics,
        shadow: cfg.shadow,
        http,
        csrf,
        notifiers: notifiers.clone(),
        external_url: cfg.external_url.clone(),
        alertmanager: alertmanager.clone(),
        reloading: Arc::default(),
        config: Arc::new(cfg.clone()),
    };
    if cfg.shadow {
        tracing::warn!(
            "shadow mode (--plan): incidents and plans are recorded, nothing is executed"
        );
    }
    let stop = CancellationToken::new();
    // Replicas of a shared store reload when any of them did.
    if let Some(mut reloads) = store.reloads() {
        let (state, stop, me) = (state.clone(), stop.clone(), cfg.replica.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    origin = reloads.recv() => match origin {
                        Ok(origin) if origin == me => {}
                        Ok(origin) => {
                            tracing::info!(replica = %origin, "another replica reloaded its runbooks: reloading");
                            let _ = api::reload_runbooks(&state);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = api::reload_runbooks(&state);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    let dispatch_task = tokio::spawn(dispatcher.clone().run());
    // The silences runs made end when they are due, on every replica.
    // Always running: a reload may configure an Alertmanager.
    let keeper_task = {
        let am = alertmanager.clone();
        let state = state.clone();
        let resolve: crate::silence::Resolve = Arc::new(move |n, body| {
            let state = state.clone();
            Box::pin(async move {
                api::ingest(&state, n, body)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        });
        tokio::spawn(
            crate::silence::Keeper {
                store: store.clone(),
                alertmanager: am,
                resolve,
            }
            .run(stop.clone()),
        )
    };
    // A shadow-mode server sends nothing: it records what would be sent.
    let outbox_stop = if cfg.shadow {
        tracing::warn!("shadow mode: notifications are recorded, none is sent");
        CancellationToken::new()
    } else {
        stop.clone()
    };
    if cfg.shadow {
        outbox_stop.cancel();
    }
    let outbox_task = tokio::spawn(
        crate::notify::deliver::Outbox {
            store: store.clone(),
            notifiers: notifiers.clone(),
            runbooks: state.runbooks.clone(),
            metrics: state.metrics.clone(),
            owner: cfg.replica.clone(),
            external_url: cfg.external_url.clone(),
        }
        .run(outbox_stop),
    );
    let drills_task = tokio::spawn(
        crate::drill::Drills {
            store: store.clone(),
            runbooks: state.runbooks.clone(),
            dispatcher: dispatcher.clone(),
            owner: cfg.replica.clone(),
            clock: cfg.clock.clone(),
            max_queued: state.max_queued_runs.clone(),
            shadow: cfg.shadow,
            external_url: cfg.external_url.clone(),
            budgets: Some(crate::drill::Budgets {
                gates: api::gates::source(
                    state.slos.clone(),
                    state.slo_status.clone(),
                    cfg.prometheus.is_some(),
                ),
                slos: state.slos.clone(),
                statuses: state.slo_status.clone(),
            }),
        }
        .run(stop.clone()),
    );
    // SLO status, read from Prometheus in the background.
    let slo_task = tokio::spawn(crate::slo::refresh::run(
        cfg.prometheus.clone(),
        state.slos.clone(),
        state.slo_status.clone(),
        Some(crate::slo::refresh::Replica {
            store: store.clone(),
            name: cfg.replica.clone(),
            lease: cfg.lease,
        }),
        cfg.slo_refresh,
        stop.clone(),
    ));
    // Capacity forecasts, read by every replica every few minutes.
    let forecast_task = tokio::spawn(crate::capacity::read::run(
        cfg.prometheus.clone(),
        state.slos.clone(),
        state.forecasts.clone(),
        cfg.slo_refresh,
        stop.clone(),
    ));
    let serve_state = state.clone();
    let stopped = stop.clone();
    let grace = cfg.shutdown_grace;
    let done = tokio::spawn(async move {
        let served = api::serve(listener, serve_state, stopped.cancelled_owned()).await;
        dispatcher.shutdown(grace).await;
        let _ = dispatch_task.await;
        let _ = outbox_task.await;
        let _ = drills_task.await;
        let _ = keeper_task.await;
        let _ = slo_task.await;
        let _ = forecast_task.await;
        store.close();
        served.context("the HTTP server failed")
    });
    Ok(Running {
        addr,
        state,
        stop,
        done,
    })
}

/// How `serve` announces its address on standard output (scripts and tests
/// read that line to learn a port chosen by the system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// `runbookd listening on http://ADDR`
    Text,
    /// One JSON object, so that a JSON log stream stays JSON when standard
    /// output and standard error are collected together.
    Json,
}

/// `runbookd serve`: until SIGTERM or SIGINT; SIGHUP reloads the config
/// file's users, notifiers, Alertmanager and limits, and the runbooks.
///
/// # Errors
/// When the server cannot start or fails.
pub async fn run(cfg: ServerConfig, announce: Announce) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the address is announced: whoever reads that line may
    // signal at once, and SIGHUP's default action would end the process.
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
        return Err(StartError::Other(anyhow::anyhow!(
            "cannot install the signal handlers"
        )));
    };
    let running = start(cfg).await?;
    let url = format!("http://{}", running.addr);
    match announce {
        Announce::Text => println!("runbookd listening on {url}"),
        Announce::Json => println!(
            "{}",
            serde_json::json!({"timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true), "level": "INFO", "fields": {"message": "listening", "url": url}})
        ),
    }
    tracing::info!(addr = %running.addr, "listening");
    let stop = running.stopper();
    let state = running.state.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    // Spawned: a slow store must not hold up SIGTERM.
                    let state = state.clone();
                    tokio::spawn(async move { let _ = api::reload_everywhere(&state).await; });
                }
            }
        }
        tracing::info!("stopping: no new requests; running steps get the shutdown grace period");
        stop.cancel();
    });
    running.wait().await.map_err(StartError::Other)
}
