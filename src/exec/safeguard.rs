//! A drill's `safeguards:`, watched while its steps run (DESIGN §12): each
//! is measured every `interval`; one that stops holding, or that cannot be
//! measured three times in a row, trips the watch, which stops the current
//! step. The run then aborts: `on_failure` runs as the rollback and the run
//! records why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runbook::verify::Condition;

/// A safeguard ready to measure: its query and what must hold of it.
#[derive(Debug, Clone)]
pub struct Guard {
    pub name: String,
    pub query: String,
    pub holds: Condition,
    pub interval: Duration,
}

/// Measurements in a row that could not be taken before the watch trips.
const UNMEASURED: u32 = 3;

/// Why the watch tripped, once it did.
pub type Tripped = Arc<Mutex<Option<String>>>;

/// Measures `guards` until `done`; when one trips, writes why to `tripped`
/// and cancels `trip`.
pub async fn watch(
    guards: Vec<Guard>,
    prom: Arc<dyn crate::integrations::Metrics>,
    trip: CancellationToken,
    tripped: Tripped,
    done: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut next: Vec<tokio::time::Instant> = vec![start; guards.len()];
    let mut failures = vec![0u32; guards.len()];
    loop {
        let Some(at) = next.iter().min().copied() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = done.cancelled() => return,
        }
        for (i, g) in guards.iter().enumerate() {
            if next[i] > tokio::time::Instant::now() {
                continue;
            }
            next[i] = tokio::time::Instant::now() + g.interval;
            let measured = tokio::select! {
                m = measure(prom.as_ref(), &g.query) => m,
                () = done.cancelled() => return,
            };
            let why = match measured {
                Ok(v) if g.holds.holds(v) => {
                    failures[i] = 0;
                    None
                }
                Ok(v) => Some(format!(
                    "safeguard `{}` tripped: `{}` measured {v} at {}, which breaks `{}`",
                    g.name,
                    g.query,
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    g.holds
                )),
                Err(e) => {
                    failures[i] += 1;
                    (failures[i] >= UNMEASURED).then(|| {
                        format!(
                            "safeguard `{}` could not be measured {UNMEASURED} times in a row ({e}): the drill stops, since nothing can tell whether it hurts the service",
                            g.name
                        )
                    })
                }
            };
            if let Some(why) = why {
                tracing::warn!(reason = %why, "drill aborted by a safeguard");
                *tripped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                trip.cancel();
                return;
            }
        }
    }
}

/// The query's one value now.
async fn measure(prom: &dyn crate::integrations::Metrics, query: &str) -> Result<f64, String> {
    match prom.values(query).await?.as_slice() {
        [] => Err("no data".into()),
        [one] if one.is_nan() => Err("NaN".into()),
        [one] => Ok(*one),
        many => Err(format!(
            "{} series: write the query to give one number",
            many.len()
        )),
    }
}
