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
pub struct RunbookOutcome {
    pub runbook: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifierOutcome {
    pub notifier: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    pub version: String,
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
    pub runs: Family<RunbookOutcome, Counter>,
    pub steps: Family<RunbookOutcome, Counter>,
    pub run_duration: HistogramFamily<Outcome>,
    pub step_duration: HistogramFamily<Outcome>,
    pub queue_depth: Gauge,
    pub running_steps: Gauge,
    pub open_incidents: Gauge,
    /// Runs paused on an approval step, waiting for a decision.
    pub awaiting_approval: Gauge,
    pub http_requests: Family<RouteCode, Counter>,
    pub http_duration: HistogramFamily<Route>,
    pub build_info: Family<BuildInfo, Gauge>,
    /// 1 when the last reload of the runbooks succeeded (or none was tried).
    pub reload_successful: Gauge,
    pub reload_success_time: Gauge,
    /// Notification delivery attempts, by notifier and outcome.
    pub deliveries: Family<NotifierOutcome, Counter>,
    /// Runs this replica stopped because it could not renew their lease in
    /// time, or found them taken over (their end is the takeover's).
    pub fenced_runs: Counter,
    /// Runs this replica took over from replicas that stopped renewing.
    pub takeovers: Counter,
    /// 1 while this replica holds the leader lease (timers, takeovers).
    pub leader: Gauge,
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
            awaiting_approval: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_seconds),
            build_info: Family::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            deliveries: Family::default(),
            fenced_runs: Counter::default(),
            takeovers: Counter::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        m.reload_successful.set(1);
        m.reload_success_time.set(unix_now());
        registry.register("notifications", "Webhook notifications received, by outcome (accepted, invalid, unauthorized, too_large, queue_full, store_error)", m.notifications.clone());
        registry.register("deliveries", "Notification delivery attempts (docs/notifications.md), by notifier and outcome (delivered, failed: retried later, refused: dead at once, expired: dead after max_age, dead: its notifier is not configured)", m.deliveries.clone());
        registry.register(
            "alerts",
            "Alerts received in accepted notifications, by status",
            m.alerts.clone(),
        );
        registry.register(
            "runs",
            "Runs finished, by runbook and outcome",
            m.runs.clone(),
        );
        registry.register(
            "steps",
            "Step attempts finished, by runbook and outcome",
            m.steps.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the version of this runbookd",
            m.build_info.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last reload of the runbooks succeeded (1) or was refused (0)",
            m.reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the runbooks were last loaded successfully (Unix time)",
            m.reload_success_time.clone(),
        );
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
            "runs_awaiting_approval",
            "Runs paused on an approval step, waiting for a decision",
            m.awaiting_approval.clone(),
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
        registry.register(
            "fenced_runs",
            "Runs this replica stopped because it could not renew their lease in time or found them taken over (their end is recorded by the takeover, not in runs_total)",
            m.fenced_runs.clone(),
        );
        registry.register(
            "takeovers",
            "Runs this replica took over (interrupted or queued again) after their replica stopped renewing",
            m.takeovers.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (escalations, drills, takeovers run there)",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`, what Prometheus asks for.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, for everything else (curl, promtool).
    Text,
}

impl Format {
    /// The format an `Accept` header prefers (OpenMetrics only when asked).
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Format {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
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

    pub fn count_for(family: &Family<RunbookOutcome, Counter>, runbook: &str, outcome: &str) {
        family
            .get_or_create(&RunbookOutcome {
                runbook: runbook.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a reload of the runbooks.
    pub fn reloaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(unix_now());
        }
    }

    /// The exposition in `format`.
    #[must_use]
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

/// Prometheus's text format 0.0.4 from prometheus-client's OpenMetrics
/// (which has no other encoder): a counter's HELP and TYPE name its samples
/// (`x_total`, where OpenMetrics names the family `x`), and the OpenMetrics
/// only lines (`# UNIT`, `# EOF`) go.
fn openmetrics_to_text(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(kind);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_by_their_samples() {
        let m = Metrics::default();
        Metrics::count_for(&m.runs, "disk-full", "succeeded");
        let text = m.encode(Format::Text);
        assert!(
            text.contains("# HELP runbookd_runs_total Runs finished"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE runbookd_runs_total counter"),
            "{text}"
        );
        assert!(
            text.contains("runbookd_runs_total{runbook=\"disk-full\",outcome=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE runbookd_queue_depth gauge"));
        let om = m.encode(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE runbookd_runs counter"));
    }
}
