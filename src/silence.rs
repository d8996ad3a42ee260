//! `silence:` steps: an Alertmanager silence (API v2) for the alert while
//! remediation runs. runbookd creates it itself (no subprocess), tags its
//! comment with the incident, run and step so that a retried step finds the
//! silence it already made instead of making a second one, and expires it
//! when the run ends (or, with `until: resolved`, when the alert resolves).

use std::time::Duration;

use serde::Deserialize;

use crate::matcher::Matcher;
pub use crate::plan::ApiMatcher;
pub use crate::runbook::Until;

/// A silence a `silence:` step made (or found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silenced {
    pub id: String,
    /// Alertmanager held the run's alert when the silence was made: its
    /// resolution can be learnt from Alertmanager (an alert posted straight
    /// to the webhook never was Alertmanager's, and its absence says
    /// nothing).
    pub watched: bool,
    /// The Alertmanager it was made in (its URL).
    pub alertmanager: String,
}

/// A silence a run made, as the store keeps it from the moment it is made:
/// what is needed to expire it (whoever finds its run ended) and, for an
/// `until: resolved` one, to ask Alertmanager about its alert and record
/// the alert's resolution in its incident's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSilence {
    /// Alertmanager's silence id.
    pub id: String,
    pub run_id: i64,
    pub incident: crate::incident::IncidentId,
    /// The incident's Alertmanager group.
    pub receiver: String,
    pub group_key: String,
    /// The run's alert, as its incident holds it.
    pub alert: crate::alert::Alert,
    pub until: Until,
    /// See [`Silenced::watched`].
    pub watched: bool,
    /// The Alertmanager it was made in (its URL; empty in stores from
    /// before this was recorded: the configured one): a reload may point
    /// runbookd at another, and the silence is expired where it is.
    pub alertmanager: String,
}

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

/// The Alertmanager runbookd silences through (`alertmanager:` in the config).
#[derive(Clone)]
pub struct Alertmanager {
    pub url: reqwest::Url,
    bearer: Option<String>,
    client: reqwest::Client,
    /// `alertmanager.restart_grace`.
    pub restart_grace: Duration,
}

impl std::fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alertmanager")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Listed {
    id: String,
    #[serde(rename = "createdBy", default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    matchers: Vec<ApiMatcher>,
    status: ListedStatus,
}

/// Whether two matcher lists say the same (in any order).
fn same_matchers(a: &[ApiMatcher], b: &[ApiMatcher]) -> bool {
    let key = |m: &ApiMatcher| (m.name.clone(), m.value.clone(), m.is_regex, m.is_equal);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

#[derive(Deserialize)]
struct ListedStatus {
    state: String,
}

impl Alertmanager {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(url: reqwest::Url, bearer: Option<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Alertmanager {
            url,
            bearer,
            client,
            restart_grace: Duration::from_secs(180),
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.as_str().trim_end_matches('/'))
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The link people follow to the silence.
    #[must_use]
    pub fn link(&self, id: &str) -> String {
        self.endpoint(&format!("/#/silences/{id}"))
    }

    /// Makes the silence, or finds the one `tag` already made (a retried
    /// step, or a run taken over after its first owner made it): its id.
    /// A new silence that would cover an alert Alertmanager holds other than
    /// the run's own is refused unless the step says `covers_others`.
    ///
    /// # Errors
    /// What Alertmanager answered, why it could not be reached, or the
    /// other alerts the silence would cover.
    pub async fn ensure(
        &self,
        silence: &crate::plan::SilencePlan,
        comment: &str,
        tag: &str,
    ) -> Result<Silenced, String> {
        let (matchers, duration) = (
            &silence.matchers,
            Duration::from_millis(silence.duration_ms),
        );
        // Checked first, also for a silence found below: its tag is
        // predictable, so anyone who can reach Alertmanager could have made
        // one (it is taken only with the same matchers, too).
        let watched = self
            .covered(matchers, &silence.alert, silence.covers_others)
            .await?;
        let listed = self
            .auth(self.client.get(self.endpoint("/api/v2/silences")))
            .send()
            .await
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.url))?;
        if !listed.status().is_success() {
            return Err(format!(
                "Alertmanager answered HTTP {} to listing silences",
                listed.status().as_u16()
            ));
        }
        let listed: Vec<Listed> = listed
            .json()
            .await
            .map_err(|e| format!("Alertmanager's silence list does not parse: {e}"))?;
        if let Some(s) = listed.iter().find(|s| {
            s.created_by == "runbookd"
                && s.comment.contains(tag)
                && s.status.state != "expired"
                && same_matchers(&s.matchers, matchers)
        }) {
            return Ok(Silenced {
                id: s.id.clone(),
                watched,
                alertmanager: self.url.to_string(),
            });
        }
        let now = chrono::Utc::now();
        let ends = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::hours(1));
        let body = serde_json::json!({
            "matchers": matchers,
            "startsAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "endsAt": ends.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "createdBy": "runbookd",
            "comment": format!("{comment} {tag}"),
        });
        let resp = self
            .auth(self.client.post(self.endpoint("/api/v2/silences")))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "Alertmanager refused the silence: HTTP {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("Alertmanager's answer does not parse: {e}"))?;
        v["silenceID"]
            .as_str()
            .map(|id| Silenced {
                id: id.to_owned(),
                watched,
                alertmanager: self.url.to_string(),
            })
            .ok_or_else(|| "Alertmanager answered without a silenceID".to_owned())
    }

    /// Whether Alertmanager holds the alert of fingerprint `own` (active,
    /// silenced or inhibited); refuses, unless `covers_others`, matchers
    /// that hold for any other alert it has.
    async fn covered(
        &self,
        matchers: &[ApiMatcher],
        own: &str,
        covers_others: bool,
    ) -> Result<bool, String> {
        #[derive(Deserialize)]
        struct Held {
            fingerprint: String,
            labels: crate::alert::Labels,
        }
        let resp = self
            .auth(self.client.get(self.endpoint(
                "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
            )))
            .send()
            .await
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.url))?;
        if !resp.status().is_success() {
            return Err(format!(
                "Alertmanager answered HTTP {} to listing alerts (asked before silencing, to check what the silence would cover)",
                resp.status().as_u16()
            ));
        }
        let held: Vec<Held> = resp
            .json()
            .await
            .map_err(|e| format!("Alertmanager's alert list does not parse: {e}"))?;
        let compiled = matchers
            .iter()
            .map(Matcher::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let holds_own = held.iter().any(|a| a.fingerprint == own);
        let others: Vec<&Held> = held
            .iter()
            .filter(|a| a.fingerprint != own && compiled.iter().all(|m| m.matches(&a.labels)))
            .collect();
        match others.first() {
            _ if covers_others => Ok(holds_own),
            None => Ok(holds_own),
            Some(first) => Err(format!(
                "not silenced: {{{}}} would also silence {} other alert(s) Alertmanager holds, e.g. {{{}}}; name narrower `matchers`, or set `covers_others: true` to silence them on purpose",
                matchers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                others.len(),
                first
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The fingerprints of the alerts Alertmanager holds as firing now
    /// (silenced and inhibited included), if it has been up for at least
    /// `restart_grace` (`None` otherwise: a restarted Alertmanager learns
    /// firing alerts again only as Prometheus resends them).
    ///
    /// # Errors
    /// What Alertmanager answered, or why it could not be reached.
    pub async fn firing(&self) -> Result<Option<std::collections::HashSet<String>>, String> {
        #[derive(Deserialize)]
        struct Status {
            uptime: String,
        }
        #[derive(Deserialize)]
        struct Held {
            fingerprint: String,
            #[serde(rename = "endsAt")]
            ends_at: String,
        }
        let get = |path: &str| self.auth(self.client.get(self.endpoint(path))).send();
        let unreachable =
            |e: reqwest::Error| format!("cannot reach Alertmanager at {}: {e}", self.url);
        let status: Status = get("/api/v2/status")
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(|e| format!("Alertmanager's status does not parse: {e}"))?;
        let up = chrono::DateTime::parse_from_rfc3339(&status.uptime).map_err(|e| {
            format!(
                "Alertmanager's uptime `{}` does not parse: {e}",
                status.uptime
            )
        })?;
        let grace = chrono::Duration::from_std(self.restart_grace).unwrap_or_default();
        let now = chrono::Utc::now();
        if now - up.with_timezone(&chrono::Utc) < grace {
            return Ok(None);
        }
        let held: Vec<Held> =
            get("/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true")
                .await
                .map_err(unreachable)?
                .json()
                .await
                .map_err(|e| format!("Alertmanager's alert list does not parse: {e}"))?;
        Ok(Some(
            held.into_iter()
                .filter(|a| {
                    chrono::DateTime::parse_from_rfc3339(&a.ends_at)
                        .map_or(true, |t| t.with_timezone(&chrono::Utc) > now)
                })
                .map(|a| a.fingerprint)
                .collect(),
        ))
    }

    /// Expires a silence (one already expired or gone is fine).
    ///
    /// # Errors
    /// What Alertmanager answered, or why it could not be reached.
    pub async fn expire(&self, id: &str) -> Result<(), String> {
        let resp = self
            .auth(
                self.client
                    .delete(self.endpoint(&format!("/api/v2/silence/{id}"))),
            )
            .send()
            .await
            .map_err(|e| format!("cannot reach Alertmanager at {}: {e}", self.url))?;
        let status = resp.status();
        if status.is_success() || status.as_u16() == 404 {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            // An already expired silence cannot be expired again.
            if text.contains("already expired") {
                return Ok(());
            }
            Err(format!(
                "Alertmanager answered HTTP {} to expiring silence {id}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ))
        }
    }
}
