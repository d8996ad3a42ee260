//! Reading forecasts from Prometheus: one range query of the usage over
//! the lookback and one instant query of the capacity per forecast, then
//! [`super::fit::project`] per series. In the server a background task does
//! it every few minutes; a Prometheus that is down leaves the last
//! forecasts in place, marked with the error.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;

use super::{fit, Capacity, Forecast, Projection};
use crate::prometheus::{Prometheus, Sample};
use crate::slo::SloSet;

fn without_name(mut l: BTreeMap<String, String>) -> BTreeMap<String, String> {
    l.remove("__name__");
    l
}

/// The capacity of a series with `labels`: for a vector capacity, its
/// series with the same labels (`__name__` aside), as Prometheus's `>=`
/// matches them in the generated alert; for a number or a scalar, that one
/// value. `None` when there is none, or it is not a number (NaN: an empty
/// `scalar(…)`).
#[must_use]
pub fn capacity_for(
    labels: &BTreeMap<String, String>,
    caps: &[Sample],
    one_for_all: bool,
) -> Option<f64> {
    let v = if one_for_all {
        caps.first().map(|s| s.value)
    } else {
        caps.iter()
            .find(|s| &without_name(s.labels.clone()) == labels)
            .map(|s| s.value)
    };
    v.filter(|v| v.is_finite())
}

/// Every series' forecast of `f` at `now`.
#[allow(clippy::cast_precision_loss)]
pub async fn read(prom: &Prometheus, f: &Forecast, now: DateTime<Utc>) -> Vec<Projection> {
    let end = now.timestamp_millis() as f64 / 1000.0;
    let start = end - f.lookback.as_secs_f64();
    let step = f.step().as_secs_f64();
    let caps = async {
        match &f.capacity {
            Capacity::Value(v) => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: *v,
            }]),
            Capacity::Query(q) | Capacity::Scalar(q) => prom.query(q, Some(end)).await,
        }
    };
    let (usage, caps) = futures_util::join!(prom.range(&f.usage, start, end, step), caps);
    let usage = match usage {
        Ok(u) => u,
        Err(e) => return vec![Projection::failed(f, format!("usage: {e}"), now)],
    };
    let caps = match caps {
        Ok(c) => c,
        Err(e) => return vec![Projection::failed(f, format!("capacity: {e}"), now)],
    };
    if usage.is_empty() {
        return vec![Projection::failed(
            f,
            format!(
                "the usage query has no series over the last {}",
                crate::slo::promql::duration(f.lookback)
            ),
            now,
        )];
    }
    let mut out: Vec<Projection> = usage
        .into_iter()
        .map(|s| {
            let labels = without_name(s.labels);
            let cap = capacity_for(&labels, &caps, !matches!(f.capacity, Capacity::Query(_)));
            fit::project(f, labels, &s.points, cap, now)
        })
        .collect();
    super::sort(&mut out);
    out
}

/// At most this many forecasts are read at once.
pub const PARALLEL: usize = 2;

/// Every forecast of `set`, soonest full first.
pub async fn read_all(prom: &Prometheus, set: &SloSet, now: DateTime<Utc>) -> Vec<Projection> {
    let reads: Vec<_> = set.forecasts().map(|f| read(prom, f, now)).collect();
    let mut all: Vec<Projection> = futures_util::stream::iter(reads)
        .buffered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    super::sort(&mut all);
    all
}

/// The forecasts the server shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub projections: Vec<Projection>,
    pub at: Option<DateTime<Utc>>,
    pub took_ms: u64,
}

pub type Shared = Arc<RwLock<Snapshot>>;

/// Forecasts move slowly: they are read this often (or at the SLO refresh,
/// if that is longer).
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Keeps `into` fresh from `prom` for the forecasts `slos` holds then, until
/// `stop`. Every replica reads its own (one range query per forecast every
/// five minutes); a forecast whose read failed keeps its last figures,
/// marked with the error. A reload is read at once.
pub async fn run(
    prom: Option<Prometheus>,
    slos: Arc<RwLock<Arc<SloSet>>>,
    into: Shared,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(prom) = prom else { return };
    let every = every.max(EVERY);
    let mut last: Option<(Arc<SloSet>, std::time::Instant)> = None;
    loop {
        let set = slos
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let due = match &last {
            None => true,
            Some((was, at)) => !Arc::ptr_eq(was, &set) || at.elapsed() >= every,
        };
        if due {
            last = Some((set.clone(), std::time::Instant::now()));
            let started = std::time::Instant::now();
            let fresh = tokio::select! {
                p = read_all(&prom, &set, Utc::now()) => p,
                () = stop.cancelled() => return,
            };
            let mut snap = into
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snap.projections = merge(&snap.projections, fresh);
            snap.at = Some(Utc::now());
            snap.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A forecast whose read failed keeps the last figures of its series,
/// with the error.
#[must_use]
pub fn merge(previous: &[Projection], fresh: Vec<Projection>) -> Vec<Projection> {
    let mut out = Vec::new();
    for p in fresh {
        let kept: Vec<&Projection> = if p.error.is_some() && p.labels.is_empty() {
            previous
                .iter()
                .filter(|q| {
                    q.service == p.service && q.forecast == p.forecast && q.fit_from.is_some()
                })
                .collect()
        } else {
            Vec::new()
        };
        if kept.is_empty() {
            out.push(p);
        } else {
            out.extend(kept.into_iter().map(|q| {
                let mut q = q.clone();
                q.error.clone_from(&p.error);
                q
            }));
        }
    }
    super::sort(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }

    #[test]
    fn capacity_is_matched_by_labels_as_prometheus_does_and_nan_is_none() {
        let usage: BTreeMap<String, String> = [("mountpoint".to_owned(), "/a".to_owned())].into();
        let caps = [
            sample(&[("__name__", "size"), ("mountpoint", "/b")], 2.0),
            sample(&[("__name__", "size"), ("mountpoint", "/a")], 1.0),
        ];
        assert_eq!(capacity_for(&usage, &caps, false), Some(1.0));
        // A vector without the series' labels is no capacity for it (the
        // alert's `>=` would not match it either).
        assert_eq!(capacity_for(&usage, &[sample(&[], 5.0)], false), None);
        // A scalar is one number for all; `scalar()` of nothing is NaN.
        assert_eq!(capacity_for(&usage, &[sample(&[], 5.0)], true), Some(5.0));
        assert_eq!(capacity_for(&usage, &[sample(&[], f64::NAN)], true), None);
    }
}
