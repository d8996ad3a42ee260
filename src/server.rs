//! `runbookd serve`, wired: store (with crash recovery), runbooks, sandbox,
//! dispatcher, HTTP. [`start`] is what the binary and the tests run.

use std::net::SocketAddr;
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
use crate::store::{self, Store};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid runbooks, refusing to start:\n{0}")]
    Runbooks(LoadErrors),
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

/// Starts the server: everything is ready when this returns.
///
/// # Errors
/// Invalid runbooks (every error listed), an unusable store, sandbox or address.
pub async fn start(cfg: ServerConfig) -> Result<Running, StartError> {
    let set = runbook::load_dir(&cfg.runbooks).map_err(StartError::Runbooks)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir `{}`", cfg.data_dir.display()))?;
    let db = cfg.data_dir.join("runbookd.db");
    let store =
        Store::open(&db).with_context(|| format!("cannot open the store `{}`", db.display()))?;
    let interrupted = store
        .write(|c| store::recover(c, "runbookd stopped while the run was executing"))
        .await
        .context("cannot recover the store")?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs that were executing when runbookd stopped are marked interrupted"
        );
    }
    let sandbox = Sandbox::new(cfg.sandbox.clone()).context("cannot set up the step sandbox")?;
    let reaped = sandbox.probe.cgroups.reap_orphans();
    if reaped > 0 {
        tracing::warn!(
            cgroups = reaped,
            "killed the leftover processes of steps of a runbookd that stopped without cleaning up"
        );
    }
    let executor = Arc::new(Executor {
        sandbox,
        settings: ExecSettings {
            kill_grace: cfg.kill_grace,
            ..ExecSettings::default()
        },
        scratch_root: std::env::temp_dir(),
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
    );
    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        runbooks,
        runbooks_dir: cfg.runbooks.clone(),
        auth: Arc::new(cfg.auth.clone()),
        body_limit: cfg.body_limit,
        max_queued_runs: Arc::new(std::sync::atomic::AtomicU64::new(cfg.max_queued_runs)),
        metrics,
        shadow: cfg.shadow,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    if cfg.shadow {
        tracing::warn!(
            "shadow mode (--plan): incidents and plans are recorded, nothing is executed"
        );
    }
    let stop = CancellationToken::new();
    let dispatch_task = tokio::spawn(dispatcher.clone().run());
    let serve_state = state.clone();
    let stopped = stop.clone();
    let grace = cfg.shutdown_grace;
    let done = tokio::spawn(async move {
        let served = api::serve(listener, serve_state, stopped.cancelled_owned()).await;
        dispatcher.shutdown(grace).await;
        let _ = dispatch_task.await;
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

/// `runbookd serve`: until SIGTERM or SIGINT; SIGHUP reloads the runbooks.
///
/// # Errors
/// When the server cannot start or fails.
pub async fn run(cfg: ServerConfig) -> Result<(), StartError> {
    let running = start(cfg).await?;
    println!("runbookd listening on http://{}", running.addr);
    tracing::info!(addr = %running.addr, "listening");
    let stop = running.stopper();
    let state = running.state.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => { let _ = api::reload_runbooks(&state); }
            }
        }
        tracing::info!("stopping: no new requests; running steps get the shutdown grace period");
        stop.cancel();
    });
    running.wait().await.map_err(StartError::Other)
}
