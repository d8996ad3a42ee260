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
/// request, and how to close it. A closed connection counts as open until
/// its task has dropped its socket, so that the descriptors in use never
/// exceed the cap, however late the closing tasks run.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Conn>>,
    /// A connection's socket was dropped.
    freed: tokio::sync::Notify,
}

struct Conn {
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Connections {
    /// Registers a new connection. Returns its id, busy counter and close token.
    fn admit(&self) -> (u64, Arc<AtomicUsize>, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            busy: Arc::new(AtomicUsize::new(0)),
            close: CancellationToken::new(),
        };
        let handles = (id, conn.busy.clone(), conn.close.clone());
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, conn);
        handles
    }

    /// Sockets not yet dropped, closing ones included.
    fn live(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Asks the oldest connection with no request in progress (or, when
    /// every one is busy, the oldest) to close, unless it was asked already.
    fn evict_one(&self) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let closing = |c: &Conn| c.close.is_cancelled();
        // Ids grow with time: the first idle one is the oldest.
        let victim = open
            .values()
            .find(|c| !closing(c) && c.busy.load(Ordering::SeqCst) == 0)
            .or_else(|| open.values().find(|c| !closing(c)));
        if let Some(c) = victim {
            c.close.cancel();
        }
    }

    /// Once a connection's socket is dropped.
    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.freed.notify_one();
    }

    /// Past `cap` open sockets: closes the oldest idle ones and waits until
    /// their sockets are dropped (at most `CLOSE_GRACE`), before the next
    /// connection is taken from the kernel's queue.
    async fn make_room(&self, cap: usize) {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        while self.live() > cap {
            self.evict_one();
            if tokio::time::timeout_at(deadline, self.freed.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = self.live(),
                    cap,
                    "connections over the cap did not close in time"
                );
                return;
            }
        }
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
        let (id, busy, close) = conns.admit();
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
        let mine = conns.clone();
        let stopping = stopping.clone();
        let header_timeout = http.header_timeout;
        tasks.spawn(async move {
            // The socket is dropped with `conn`, at the end of this block,
            // before the connection stops counting as open.
            {
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
            }
            mine.remove(id);
        });
        // Over the cap: the oldest idle connections close before another
        // is accepted (the others wait in the kernel's queue, holding none
        // of this process's descriptors).
        conns.make_room(http.max_connections).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_connection_counts_until_its_socket_is_dropped() {
        let conns = Arc::new(Connections::default());
        let (old, _, old_close) = conns.admit();
        let (_, busy, busy_close) = conns.admit();
        busy.fetch_add(1, Ordering::SeqCst);
        let (_, _, _) = conns.admit();
        // Over a cap of 2: the oldest idle one is asked to close, and room
        // is made only once its socket is gone.
        let making = tokio::spawn({
            let conns = conns.clone();
            async move { conns.make_room(2).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(old_close.is_cancelled(), "the oldest idle one closes");
        assert!(!busy_close.is_cancelled(), "a busy one is spared");
        assert!(!making.is_finished(), "still 3 sockets open");
        assert_eq!(conns.live(), 3);
        conns.remove(old);
        making.await.unwrap();
        assert_eq!(conns.live(), 2);
    }
}
