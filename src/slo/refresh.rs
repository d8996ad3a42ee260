//! Reading every SLO's status, and keeping it fresh in the server: a
//! background task asks Prometheus every `prometheus.refresh`; a webhook
//! never waits for it, and a Prometheus that is down or slow leaves the
//! last numbers in place, marked stale with the error.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;

use super::status::{read, Status};
use super::SloSet;
use crate::prometheus::Prometheus;

/// At most this many SLOs are asked about at once: Prometheus usually
/// shares the machine's cores with the services it watches (and here with
/// runbookd's webhook), so a refresh is spread out rather than a burst
/// (docs/benchmarks.md).
pub const PARALLEL: usize = 2;

/// Every SLO of `set`, in the set's order.
pub async fn read_all(prom: &Prometheus, set: &SloSet, now: DateTime<Utc>) -> Vec<Status> {
    read_all_with(prom, set, now, PARALLEL).await
}

/// As [`read_all`], `parallel` SLOs at a time.
pub async fn read_all_with(
    prom: &Prometheus,
    set: &SloSet,
    now: DateTime<Utc>,
    parallel: usize,
) -> Vec<Status> {
    let reads: Vec<_> = set.iter().map(|slo| read(prom, slo, now)).collect();
    futures_util::stream::iter(reads)
        .buffered(parallel.max(1))
        .collect()
        .await
}

/// The statuses the server shows (empty until the first refresh).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub statuses: Vec<Status>,
    /// When the last refresh ended.
    pub at: Option<DateTime<Utc>>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

pub type Shared = Arc<RwLock<Snapshot>>;

/// Merges a refresh into the previous snapshot: an SLO whose check failed
/// keeps its last numbers, marked stale with the error.
#[must_use]
pub fn merge(previous: &[Status], fresh: Vec<Status>) -> Vec<Status> {
    fresh
        .into_iter()
        .map(|s| {
            match (
                &s.error,
                previous
                    .iter()
                    .find(|p| p.service == s.service && p.slo == s.slo),
            ) {
                (Some(e), Some(p)) if p.error.is_none() || p.stale => {
                    let mut kept = p.clone();
                    kept.error = Some(e.clone());
                    kept.stale = true;
                    kept
                }
                _ => s,
            }
        })
        .collect()
}

/// Refreshes `into` from `prom` every `every`, for the SLOs `slos` holds
/// then (a reload changes them), until `stop`.
pub async fn run(
    prom: Option<Prometheus>,
    slos: Arc<RwLock<Arc<SloSet>>>,
    into: Shared,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(prom) = prom else { return };
    loop {
        let set = slos
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !set.is_empty() {
            let started = std::time::Instant::now();
            let fresh = tokio::select! {
                s = read_all(&prom, &set, Utc::now()) => s,
                () = stop.cancelled() => return,
            };
            let failed = fresh.iter().filter(|s| s.error.is_some()).count();
            if failed > 0 {
                let first = fresh
                    .iter()
                    .find_map(|s| s.error.clone())
                    .unwrap_or_default();
                tracing::warn!(failed, error = %first, "cannot read the status of some SLOs from Prometheus: their last numbers are shown, marked stale");
            }
            let mut snap = into
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snap.statuses = merge(&snap.statuses, fresh);
            snap.at = Some(Utc::now());
            snap.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// `3d 4h`, `2h 5m`, `40s`: how long until something, for people.
#[must_use]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn human(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 1.0 {
        return "now".into();
    }
    let s = seconds as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
