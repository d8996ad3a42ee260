//! `silence:` steps: an Alertmanager silence (API v2) for the alert while
//! remediation runs. runbookd creates it itself (no subprocess), tags its
//! comment with the incident, run and step so that a retried step finds the
//! silence it already made instead of making a second one, and expires it
//! when the run ends (or, with `until: resolved`, when the alert resolves).

use std::time::Duration;

pub use crate::alertmanager::{Alertmanager, Silenced};
pub use crate::incident::RunSilence;
pub use crate::plan::ApiMatcher;
pub use crate::runbook::Until;

/// Records a resolution learnt from Alertmanager's API, as the webhook
/// would have: the notification and its raw body.
pub type Resolve = std::sync::Arc<
    dyn Fn(
            crate::alert::Notification,
            Vec<u8>,
        ) -> futures_util::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync,
>;

/// Ends the silences runs made when they are due, on every replica (an
/// expiry is idempotent), and learns the resolution of silenced alerts.
pub struct Keeper {
    pub store: crate::store::Store,
    /// `None` while no Alertmanager is configured (a reload may add one).
    pub alertmanager: Alertmanagers,
    pub resolve: Resolve,
}

/// How often due silences are looked for.
const KEEPER_TICK: Duration = Duration::from_secs(1);
/// How often Alertmanager is asked about the alerts of `until: resolved`
/// silences.
const RESOLUTION_TICK: Duration = Duration::from_secs(5);

/// The Alertmanager `silence:` steps silence through (`None` while none is
/// configured; a reload may replace it), and every one this process has
/// had, by URL: a silence is expired, and its alert asked about, in the one
/// it was made in, even after a reload pointed runbookd at another.
#[derive(Debug, Clone, Default)]
pub struct Alertmanagers(std::sync::Arc<std::sync::RwLock<InForce>>);

/// The Alertmanager in force, and every one had, by URL.
type InForce = (
    Option<Alertmanager>,
    std::collections::HashMap<String, Alertmanager>,
);

impl Alertmanagers {
    #[must_use]
    pub fn new(current: Option<Alertmanager>) -> Self {
        let a = Alertmanagers::default();
        a.set(current);
        a
    }

    /// The one in force.
    #[must_use]
    pub fn get(&self) -> Option<Alertmanager> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Puts `am` in force; the one before stays known.
    pub fn set(&self, am: Option<Alertmanager>) {
        let mut w = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = &am {
            w.1.insert(a.url.to_string(), a.clone());
        }
        w.0 = am;
    }

    /// The one in force at each use, as runs reach it.
    #[must_use]
    pub fn in_force(&self) -> crate::integrations::AlertsInForce {
        let all = self.clone();
        std::sync::Arc::new(move || {
            all.get()
                .map(|a| std::sync::Arc::new(a) as std::sync::Arc<dyn crate::integrations::Alerts>)
        })
    }

    /// Whether this process has had any (silences to look after).
    fn ever(&self) -> bool {
        !self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .is_empty()
    }

    /// The Alertmanager `s` was made in, if this process has had it.
    fn made_in(&self, s: &RunSilence) -> Option<Alertmanager> {
        let r = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.alertmanager.is_empty() {
            r.0.clone()
        } else {
            r.1.get(&s.alertmanager).cloned()
        }
    }
}

impl Keeper {
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let mut last_asked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(KEEPER_TICK) => {}
                () = stop.cancelled() => return,
            }
            self.expire_due().await;
            if last_asked.elapsed() >= RESOLUTION_TICK {
                last_asked = tokio::time::Instant::now();
                self.learn_resolutions().await;
            }
        }
    }

    /// Expires the silences whose run ended or whose alert resolved.
    async fn expire_due(&self) {
        if !self.alertmanager.ever() {
            return;
        }
        let due = match self.store.silences_due().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the silences due");
                return;
            }
        };
        for s in due {
            let Some(am) = self.alertmanager.made_in(&s) else {
                // Made in an Alertmanager this process never had (the
                // config changed across a restart): nothing to ask.
                tracing::warn!(incident = %s.incident, silence = %s.id, alertmanager = %s.alertmanager, "a run's silence was made in an Alertmanager no longer configured: it ends there at its duration");
                if let Err(e) = self.store.silence_ended(s.id.clone()).await {
                    tracing::warn!(silence = %s.id, error = %e, "cannot record a silence as ended");
                }
                continue;
            };
            match am.expire(&s.id).await {
                Ok(()) => {
                    tracing::info!(incident = %s.incident, run = s.run_id, silence = %s.id, until = s.until.as_str(), alertmanager = %am.url, "a run's silence is expired");
                    if let Err(e) = self.store.silence_ended(s.id.clone()).await {
                        tracing::warn!(silence = %s.id, error = %e, "cannot record a silence as ended");
                    }
                }
                Err(e) => {
                    tracing::warn!(incident = %s.incident, silence = %s.id, error = %e, "cannot expire a run's silence; trying again");
                }
            }
        }
    }

    /// Records the resolution of each `until: resolved` silence's alert
    /// that the Alertmanager holding its silence no longer holds as firing
    /// (an alert silenced in one Alertmanager says nothing by its absence
    /// from another).
    async fn learn_resolutions(&self) {
        if !self.alertmanager.ever() {
            return;
        }
        let held = match self.store.silences_held().await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the silences held");
                return;
            }
        };
        // Manual runs' and drills' alerts are runbookd's own, not
        // Alertmanager's: theirs end with their incident.
        let mut by_am: std::collections::BTreeMap<String, (Alertmanager, Vec<RunSilence>)> =
            std::collections::BTreeMap::new();
        for s in held {
            if s.receiver.starts_with("runbookd-") {
                continue;
            }
            if let Some(am) = self.alertmanager.made_in(&s) {
                by_am
                    .entry(am.url.to_string())
                    .or_insert_with(|| (am, Vec::new()))
                    .1
                    .push(s);
            }
        }
        for (am, held) in by_am.into_values() {
            self.resolutions_in(&am, held).await;
        }
    }

    async fn resolutions_in(&self, am: &Alertmanager, held: Vec<RunSilence>) {
        let firing = match am.firing().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask Alertmanager whether silenced alerts still fire");
                return;
            }
        };
        for s in held
            .into_iter()
            .filter(|s| !firing.contains(&s.alert.fingerprint))
        {
            let mut alert = serde_json::to_value(&s.alert).unwrap_or_default();
            alert["status"] = serde_json::json!("resolved");
            alert["endsAt"] = serde_json::json!(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let body = serde_json::to_vec(&serde_json::json!({
                "version": "4",
                "receiver": s.receiver,
                "groupKey": s.group_key,
                "status": "resolved",
                "alerts": [alert],
                "groupLabels": {},
                "commonLabels": s.alert.labels,
                "commonAnnotations": {},
                "externalURL": am.url.as_str(),
                "truncatedAlerts": 0,
            }))
            .unwrap_or_default();
            let n = match crate::alert::Notification::from_json(&body) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(silence = %s.id, error = %e, "cannot make the resolution of a silenced alert");
                    continue;
                }
            };
            tracing::info!(incident = %s.incident, silence = %s.id, fingerprint = %s.alert.fingerprint, "Alertmanager no longer holds a silenced alert as firing: its resolution is recorded");
            if let Err(e) = (self.resolve)(n, body).await {
                tracing::warn!(incident = %s.incident, error = %e, "cannot record a silenced alert's resolution; asking again later");
            }
        }
    }
}
