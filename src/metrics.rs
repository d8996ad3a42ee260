//! runbookd's own golden signals, served at `GET /metrics`: traffic
//! (notifications, alerts, HTTP requests), errors (by outcome and code),
//! latency (HTTP, run and step durations) and saturation (queue depth,
//! running steps, open incidents).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertStatus {
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric runbookd exports.
pub struct Metrics {
    pub registry: Registry,
    pub notifications: Family<Outcome, Counter>,
    pub alerts: Family<AlertStatus, Counter>,
    pub runs: Family<Outcome, Counter>,
    pub steps: Family<Outcome, Counter>,
    pub run_duration: HistogramFamily<Outcome>,
    pub step_duration: HistogramFamily<Outcome>,
    pub queue_depth: Gauge,
    pub running_steps: Gauge,
    pub open_incidents: Gauge,
    pub http_requests: Family<RouteCode, Counter>,
    pub http_duration: HistogramFamily<Route>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

fn http_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runbookd");
        let m = Metrics {
            notifications: Family::default(),
            alerts: Family::default(),
            runs: Family::default(),
            steps: Family::default(),
            run_duration: Family::new_with_constructor(seconds),
            step_duration: Family::new_with_constructor(seconds),
            queue_depth: Gauge::default(),
            running_steps: Gauge::default(),
            open_incidents: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_seconds),
            registry: Registry::default(),
        };
        registry.register("notifications", "Webhook notifications received, by outcome (accepted, invalid, unauthorized, too_large, queue_full, store_error)", m.notifications.clone());
        registry.register(
            "alerts",
            "Alerts received in accepted notifications, by status",
            m.alerts.clone(),
        );
        registry.register("runs", "Runs finished, by outcome", m.runs.clone());
        registry.register("steps", "Steps finished, by outcome", m.steps.clone());
        registry.register(
            "run_duration_seconds",
            "Duration of finished runs",
            m.run_duration.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Duration of finished steps",
            m.step_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Runs queued, waiting to start",
            m.queue_depth.clone(),
        );
        registry.register(
            "running_steps",
            "Steps executing now",
            m.running_steps.clone(),
        );
        registry.register(
            "open_incidents",
            "Incidents not resolved",
            m.open_incidents.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by route and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route",
            m.http_duration.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn count(family: &Family<Outcome, Counter>, outcome: &str) {
        family
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
