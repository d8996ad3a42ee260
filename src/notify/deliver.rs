//! The outbox worker, on every replica: fires due escalation timers, takes
//! due notifications from the store (each attempt belongs to one replica),
//! renders and sends them, and records how each attempt ended.
//!
//! At-least-once: a notification is marked delivered only after the
//! receiver accepted it, so a crash between the two sends it again (the
//! `X-Runbookd-Delivery` header and PagerDuty's `dedup_key` let receivers
//! fold repeats). Failures are retried with exponential backoff and jitter,
//! at least as late as `Retry-After`; a 4xx other than 408 and 429 and a
//! permanent SMTP reply end it `dead` at once, and so does its maximum age.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::config::{Notifier, Notifiers, Rate};
use super::send::{self, Outcome, Outgoing};
use super::{OutboxItem, Settle};
use crate::metrics::Metrics;
use crate::runbook::RunbookSet;
use crate::store::Store;

/// How often the worker looks for due work.
const POLL: Duration = Duration::from_millis(250);
/// Notifications taken per claim.
const BATCH: u32 = 32;
/// Deliveries in flight at once per replica.
const IN_FLIGHT: usize = 32;
/// Retry delays double from the notifier's `backoff` up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Everything the worker needs.
#[derive(Clone)]
pub struct Outbox {
    pub store: Store,
    /// The configured notifiers (a reload may replace them).
    pub notifiers: crate::shared::Shared<Arc<Notifiers>>,
    pub runbooks: Arc<RwLock<Arc<RunbookSet>>>,
    pub metrics: Arc<Metrics>,
    /// This replica's name (the owner of the attempts it makes).
    pub owner: String,
    /// The base of incident links.
    pub external_url: String,
}

/// A notifier's rate as a token bucket.
struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        Bucket {
            rate,
            tokens: f64::from(rate.n),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        let per_token = self.rate.per.as_secs_f64() / f64::from(self.rate.n);
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() / per_token)
            .min(f64::from(self.rate.n));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) * per_token))
        }
    }
}

/// The delay before attempt `attempt + 1`: `backoff` doubled per attempt,
/// at most `MAX_BACKOFF`, ±20% jitter, and never before `Retry-After`.
#[must_use]
pub fn retry_delay(backoff: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let base = exp.min(MAX_BACKOFF);
    let jittered = base.mul_f64(0.8 + fastrand::f64() * 0.4);
    match retry_after {
        Some(ra) => jittered.max(ra),
        None => jittered,
    }
}

/// What to record for an attempt's outcome.
fn settle_for(n: &Notifier, item: &OutboxItem, outcome: Outcome) -> Settle {
    match outcome {
        Outcome::Delivered => Settle::Delivered,
        Outcome::Permanent(error) => Settle::Dead {
            error: format!("refused (not retried): {error}"),
        },
        Outcome::Retry { error, after } => {
            // A Retry-After past the maximum age cannot be honoured: the
            // notification is given up instead (and never overflows a date).
            let delay = retry_delay(n.backoff, item.attempt, after.map(|a| a.min(n.max_age)));
            let at = chrono::Duration::from_std(delay)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d));
            let deadline = chrono::Duration::from_std(n.max_age)
                .ok()
                .and_then(|d| item.created_at.checked_add_signed(d));
            let (Some(at), Some(deadline)) = (at, deadline) else {
                return Settle::Dead {
                    error: format!("gave up: the next attempt is out of range: {error}"),
                };
            };
            if at > deadline {
                Settle::Dead {
                    error: format!(
                        "gave up after {} attempts (max_age {}): {error}",
                        item.attempt,
                        humantime::format_duration(n.max_age)
                    ),
                }
            } else {
                Settle::Retry { at, error }
            }
        }
    }
}

impl Outbox {
    /// Delivers until `stop` (a shadow-mode server never starts it); what is
    /// in flight then is left to its lease
    /// (another replica, or the next start, sends it again).
    pub async fn run(self, stop: CancellationToken) {
        let client = match reqwest::Client::builder()
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the notification sender; notifications stay queued");
                return;
            }
        };
        // The lease and the rate buckets follow the notifiers in force.
        let shape = |notifiers: &Notifiers| {
            let lease = notifiers
                .values()
                .map(|n| n.timeout * 2)
                .max()
                .unwrap_or(Duration::from_secs(20))
                + Duration::from_secs(30);
            let buckets: HashMap<String, Bucket> = notifiers
                .values()
                .filter_map(|n| Some((n.name.clone(), Bucket::new(n.rate?))))
                .collect();
            (lease, buckets)
        };
        let mut notifiers = self.notifiers.get();
        let (mut lease, mut buckets) = shape(&notifiers);
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut inflight = tokio::task::JoinSet::new();
        // The last claim found work: look again as soon as a slot is free
        // (an incident's next notification becomes due when its previous
        // one is delivered), not only at the next poll.
        let mut backlog = false;
        let mut escalated_at = Instant::now();
        loop {
            if backlog && slots.available_permits() > 0 {
                if stop.is_cancelled() {
                    break;
                }
            } else {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(POLL) => {}
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                }
            }
            while inflight.try_join_next().is_some() {}
            let now = self.notifiers.get();
            if !Arc::ptr_eq(&now, &notifiers) {
                notifiers = now;
                (lease, buckets) = shape(&notifiers);
            }
            if !backlog {
                match self.store.outbox_due().await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the outbox");
                        continue;
                    }
                }
            }
            if escalated_at.elapsed() >= POLL {
                escalated_at = Instant::now();
                match self.store.escalate().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(escalations = n, "escalation timers fired"),
                    Err(e) => tracing::warn!(error = %e, "cannot fire escalation timers"),
                }
            }
            let free = u32::try_from(slots.available_permits())
                .unwrap_or(0)
                .min(BATCH);
            if free == 0 {
                backlog = true;
                continue;
            }
            let items = match self
                .store
                .outbox_claim(self.owner.clone(), free, lease)
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    backlog = false;
                    tracing::warn!(error = %e, "cannot take notifications from the outbox");
                    continue;
                }
            };
            backlog = !items.is_empty();
            for item in items {
                let Some(n) = notifiers.get(&item.notifier).cloned() else {
                    let error = format!(
                        "notifier `{}` is not configured (any more); fix the config, then `runbookd notifications retry {}`",
                        item.notifier, item.id
                    );
                    self.record(&item, "dead", Settle::Dead { error }).await;
                    continue;
                };
                if let Some(b) = buckets.get_mut(&n.name) {
                    if let Err(wait) = b.take() {
                        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                        let _ = self
                            .store
                            .outbox_settle(item.id, item.attempt, Settle::Defer { at })
                            .await;
                        continue;
                    }
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                let client = client.clone();
                inflight.spawn(async move {
                    this.deliver(&client, &n, item).await;
                    drop(permit);
                });
            }
        }
        // Let what is in flight finish briefly; the rest is sent again later.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
    }

    async fn deliver(&self, client: &reqwest::Client, n: &Notifier, item: OutboxItem) {
        let expired = chrono::Duration::from_std(n.max_age)
            .ok()
            .and_then(|d| item.created_at.checked_add_signed(d))
            .is_some_and(|deadline| Utc::now() > deadline);
        if expired {
            let error = format!(
                "expired before it could be sent (max_age {}): it is no news any more",
                humantime::format_duration(n.max_age)
            );
            self.record(&item, "expired", Settle::Dead { error }).await;
            return;
        }
        if matches!(n.target, super::config::Target::Pagerduty { .. })
            && item.status == crate::incident::IncidentStatus::Resolved
            && !matches!(
                item.event,
                super::Event::IncidentResolved | super::Event::BudgetUnfrozen
            )
        {
            let error = "not sent: the incident is resolved, and a PagerDuty trigger would open its page again".to_owned();
            self.record(&item, "skipped", Settle::Dead { error }).await;
            return;
        }
        let url = format!("{}{}", self.external_url, item.incident.path());
        let text = self.render(&item, &url);
        let outcome = send::send(
            client,
            n,
            &Outgoing {
                alert: item.alert(),
                item: &item,
                text,
                url,
            },
        )
        .await;
        let label = match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "failed",
            Outcome::Permanent(_) => "refused",
        };
        let settle = settle_for(n, &item, outcome);
        let label = if matches!(settle, Settle::Dead { .. }) && label == "failed" {
            "expired"
        } else {
            label
        };
        self.record(&item, label, settle).await;
    }

    async fn record(&self, item: &OutboxItem, outcome: &str, settle: Settle) {
        self.metrics
            .deliveries
            .get_or_create(&crate::metrics::NotifierOutcome {
                notifier: item.notifier.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        match &settle {
            Settle::Delivered => {
                tracing::info!(incident = %item.incident, notifier = %item.notifier, event = %item.event, id = item.id, attempt = item.attempt, "notification delivered");
            }
            Settle::Retry { at, error } => {
                tracing::warn!(incident = %item.incident, notifier = %item.notifier, event = %item.event, id = item.id, attempt = item.attempt, next = %at, error = %error, "notification not delivered; will retry");
            }
            Settle::Dead { error } => {
                tracing::error!(incident = %item.incident, notifier = %item.notifier, event = %item.event, id = item.id, attempt = item.attempt, error = %error, "notification dead");
            }
            Settle::Defer { .. } => {}
        }
        match self
            .store
            .outbox_settle(item.id, item.attempt, settle)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                id = item.id,
                "a notification attempt outlived its lease; another attempt owns it"
            ),
            Err(e) => {
                tracing::warn!(id = item.id, error = %e, "cannot record a notification attempt; it will be sent again after its lease");
            }
        }
    }

    /// The message: the rule's template over the alert context plus
    /// `event`, or the default text; a template that cannot render for this
    /// alert falls back to the default text, saying why.
    fn render(&self, item: &OutboxItem, url: &str) -> String {
        let runbook = self.runbooks.read().ok().and_then(|set| {
            item.runbook
                .as_deref()
                .and_then(|rb| set.get(rb).map(|r| (r.title.clone(), r.severity)))
        });
        // Severity is a field of every channel's message (and the email's
        // subject): the text does not repeat it.
        let default = format!("{}: {}", item.title, item.detail);
        let Some(src) = &item.template else {
            return default;
        };
        let rendered = crate::template::Template::compile_message(src).and_then(|t| {
            t.render(&message_context(
                item,
                url,
                runbook.as_ref().map(|(t, s)| (t.as_str(), *s)),
            ))
            .map_err(|e| e.to_string())
        });
        match rendered {
            Ok(text) if !text.trim().is_empty() => text,
            Ok(_) => default,
            Err(e) => format!("{default} (the message template failed: {e})"),
        }
    }
}

/// The template context of a message: the step context of DESIGN §3 for the
/// event's alert (without `steps`), the incident's `status`, `title` and
/// `url`, and `event`.
#[must_use]
pub fn message_context(
    item: &OutboxItem,
    url: &str,
    runbook: Option<(&str, crate::runbook::Severity)>,
) -> crate::template::Data {
    let n = item
        .body
        .as_deref()
        .and_then(|b| crate::alert::Notification::from_json(b).ok());
    let mut v = serde_json::json!({
        "event": item.event,
        "incident": {
            "id": item.incident,
            "severity": item.severity,
            "status": item.status,
            "title": item.title,
            "url": url,
        },
    });
    if let Some(rb) = &item.runbook {
        let (title, severity) = runbook.unwrap_or((rb, item.severity));
        v["runbook"] = serde_json::json!({"name": rb, "title": title, "severity": severity});
    }
    if let Some(n) = &n {
        let alert = item
            .fingerprint
            .as_deref()
            .and_then(|f| n.alerts.iter().find(|a| a.fingerprint == f))
            .or_else(|| n.alerts.first());
        if let Some(a) = alert {
            v["alert"] = serde_json::to_value(a).unwrap_or_default();
            v["labels"] = serde_json::to_value(&a.labels).unwrap_or_default();
            v["annotations"] = serde_json::to_value(&a.annotations).unwrap_or_default();
        }
        v["group"] = serde_json::json!({
            "groupKey": n.group_key,
            "receiver": n.receiver,
            "status": n.status,
            "groupLabels": n.group_labels,
            "commonLabels": n.common_labels,
            "commonAnnotations": n.common_annotations,
            "externalURL": n.external_url,
            "truncatedAlerts": n.truncated_alerts,
        });
    }
    crate::template::Data::new(v)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An outbox item about INC-0001 with this detail.
    pub(in crate::notify) fn item(detail: String) -> OutboxItem {
        OutboxItem {
            id: 1,
            attempt: 1,
            notifier: "hook".into(),
            event: super::super::Event::RunFailed,
            incident: super::super::About::Incident(crate::incident::IncidentId(1)),
            title: "Disk full".into(),
            severity: crate::runbook::Severity::Sev2,
            status: crate::incident::IncidentStatus::Investigating,
            services: vec![" ".into()],
            runbook: Some("disk".into()),
            run_id: Some(3),
            step: None,
            detail,
            template: None,
            created_at: Utc::now(),
            body: None,
            fingerprint: None,
        }
    }

    #[test]
    fn a_huge_retry_after_gives_up_instead_of_overflowing() {
        let file: super::super::config::NotifierFile =
            serde_yaml::from_str("{type: webhook, url: 'http://127.0.0.1:9/x', max_age: 1h}")
                .unwrap();
        let n = file.check("hook").unwrap();
        let it = item("x".into());
        for secs in [u64::MAX, 9_000_000_000_000, 10_000] {
            let s = settle_for(
                &n,
                &it,
                Outcome::Retry {
                    error: "HTTP 429".into(),
                    after: Some(Duration::from_secs(secs)),
                },
            );
            assert!(
                matches!(&s, Settle::Dead { error } if error.contains("HTTP 429")),
                "{secs}: {s:?}"
            );
        }
        let s = settle_for(
            &n,
            &it,
            Outcome::Retry {
                error: "HTTP 429".into(),
                after: Some(Duration::from_secs(60)),
            },
        );
        assert!(
            matches!(s, Settle::Retry { at, .. } if at >= Utc::now() + chrono::Duration::seconds(59))
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_honour_retry_after() {
        let b = Duration::from_secs(1);
        for _ in 0..50 {
            let d1 = retry_delay(b, 1, None);
            assert!(
                d1 >= Duration::from_millis(800) && d1 <= Duration::from_millis(1200),
                "{d1:?}"
            );
            let d4 = retry_delay(b, 4, None);
            assert!(
                d4 >= Duration::from_millis(6400) && d4 <= Duration::from_millis(9600),
                "{d4:?}"
            );
            assert!(retry_delay(b, 30, None) <= MAX_BACKOFF.mul_f64(1.2));
            assert!(retry_delay(b, 1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
    }

    #[test]
    fn a_bucket_allows_its_rate_and_says_when_the_next_token_comes() {
        let mut b = Bucket::new(Rate {
            n: 2,
            per: Duration::from_secs(1),
        });
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
