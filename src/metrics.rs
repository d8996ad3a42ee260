//! runbookd's own golden signals, served at `GET /metrics`: traffic
//! (webhooks received, alerts, HTTP requests), errors (by outcome and
//! code), latency (HTTP, run and step durations, alert to first step) and
//! saturation (queue depth, running steps, open incidents, the outbox), the
//! replica's part in a cluster (leader, takeovers, fenced runs), and the
//! process's own `process_*` metrics.

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
    /// From an alert's start (Alertmanager's `startsAt`) to the first step
    /// of its run: the whole response time, Alertmanager's waits included.
    pub alert_to_first_step: Histogram,
    /// Notifications still to deliver, and those given up on.
    pub outbox_backlog: Gauge,
    pub outbox_dead: Gauge,
    process: Process,
}

/// The process's own metrics (`process_*`, as Prometheus's client
/// libraries name them), read from `/proc` at each scrape.
#[derive(Default)]
struct Process {
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

fn http_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("runbookd");
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
            alert_to_first_step: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            outbox_backlog: Gauge::default(),
            outbox_dead: Gauge::default(),
            process: Process::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        m.reload_successful.set(1);
        m.reload_success_time.set(unix_now());
        registry.register("webhooks", "Alertmanager notifications received on /webhook, by outcome (accepted, invalid, unauthorized, too_large, queue_full, store_error, refused)", m.notifications.clone());
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
        registry.register(
            "alert_to_first_step_seconds",
            "From an alert's start (startsAt) to the first step of its run, Alertmanager's group_wait and the queue included",
            m.alert_to_first_step.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Notifications to people still to deliver (pending or being sent)",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_dead",
            "Notifications to people given up on (dead: see them per incident)",
            m.outbox_dead.clone(),
        );
        let p = &m.process;
        root.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds.clone(),
        );
        root.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident.clone(),
        );
        root.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.virtual_memory.clone(),
        );
        root.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.clone(),
        );
        root.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.clone(),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            p.start_time.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
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

    /// Reads the process's own figures from `/proc/self` (nothing changes
    /// where it cannot be read).
    fn refresh_process(&self) {
        let p = &self.process;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        let to_f = |n: i64| {
            #[allow(clippy::cast_precision_loss)] // ticks and seconds fit f64 well enough
            let f = n as f64;
            f
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command (which may hold spaces), from state.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                let now = to_f(utime + stime) / to_f(ticks);
                let before = p.cpu_seconds.get();
                if now > before {
                    p.cpu_seconds.inc_by(now - before);
                }
            }
            if let Some(v) = field(23) {
                p.virtual_memory.set(v);
            }
            if let Some(rss) = field(24) {
                p.resident.set(rss * page);
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<i64>().ok())
            });
            if let (Some(start), Some(boot)) = (field(22), boot) {
                p.start_time.set(to_f(boot) + to_f(start) / to_f(ticks));
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            p.open_fds
                .set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        }
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            p.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
    }

    /// The exposition in `format`.
    #[must_use]
    pub fn encode(&self, format: Format) -> String {
        self.refresh_process();
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
