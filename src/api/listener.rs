//! The accept loop: HTTP/1.1 connections served by hyper with the limits
//! `axum::serve` lacks. A client must send a request's headers within
//! `http.header_timeout` (also the idle time allowed between requests on a
//! kept-alive connection), and at most `http.max_connections` are open at
//! once: past that, the oldest connection with no request in progress is
//! closed for the new one, so silent connections can neither exhaust the
//! process's descriptors (steps need them) nor lock Alertmanager out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;

/// The open connections: when each was accepted, whether it is serving a
/// request, and how to close it.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Conn>>,
}

struct Conn {
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Connections {
    /// Registers a new connection, first closing the oldest idle one when
    /// `cap` are already open. Returns its id, busy counter and close token.
    fn admit(&self, cap: usize) -> (u64, Arc<AtomicUsize>, CancellationToken) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= cap {
            // Ids grow with time: the first idle one is the oldest.
            let victim = open
                .iter()
                .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)
                .or_else(|| open.keys().next().copied());
            if let Some(id) = victim {
                if let Some(c) = open.remove(&id) {
                    c.close.cancel();
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            busy: Arc::new(AtomicUsize::new(0)),
            close: CancellationToken::new(),
        };
        let handles = (id, conn.busy.clone(), conn.close.clone());
        open.insert(id, conn);
        handles
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn close_all(&self) {
        for c in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            c.close.cancel();
        }
    }
}

/// Decrements a connection's busy count when a request ends or is dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a closed or shutting-down connection may take to finish the
/// response it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (within a grace period).
///
/// # Errors
/// Never after startup: failed accepts are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    http: HttpConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let conns = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors (or a transient error): back off rather
                // than spin; the cap keeps this rare.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, busy, close) = conns.admit(http.max_connections);
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // Who is on the other end: writes without users are taken from loopback only.
            req.extensions_mut().insert(super::Peer(peer));
            busy.fetch_add(1, Ordering::SeqCst);
            let guard = Busy(busy.clone());
            let fut = hyper::service::Service::call(&inner, req);
            async move {
                let resp = fut.await;
                drop(guard);
                resp
            }
        });
        let conns = conns.clone();
        let stopping = stopping.clone();
        let header_timeout = http.header_timeout;
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = close.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                }
                () = stopping.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                }
            }
            conns.remove(id);
        });
    }
    drop(listener);
    stopping.cancel();
    conns.close_all();
    tasks.close();
    let _ = tokio::time::timeout(CLOSE_GRACE * 2, tasks.wait()).await;
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit, and returns
/// the connection cap that leaves `reserve` descriptors for steps and the store.
#[must_use]
pub fn descriptor_budget(wanted: usize, reserve: u64) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX);
    let cap = wanted.min(room).max(8);
    if cap < wanted {
        tracing::warn!(
            nofile = soft,
            reserved_for_steps = reserve,
            max_connections = cap,
            "the open-files limit is low: connections are capped below http.max_connections"
        );
    }
    cap
}
