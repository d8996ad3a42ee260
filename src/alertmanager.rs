//! Alertmanager's API v2, as runbookd uses it: silences (`silence:`
//! steps, made once and expired when due) and the alerts it holds
//! (`verify: {alert_resolved: true}`, resolutions of silenced alerts).
//! A run reaches it as [`crate::integrations::Alerts`].

use std::time::Duration;

use serde::Deserialize;

use crate::matcher::Matcher;
use crate::plan::ApiMatcher;

pub use crate::integrations::Silenced;

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

impl crate::integrations::Alerts for Alertmanager {
    fn ensure<'a>(
        &'a self,
        plan: &'a crate::plan::SilencePlan,
        comment: &'a str,
        tag: &'a str,
    ) -> crate::integrations::Answer<'a, Silenced> {
        Box::pin(Alertmanager::ensure(self, plan, comment, tag))
    }

    fn expire<'a>(&'a self, id: &'a str) -> crate::integrations::Answer<'a, ()> {
        Box::pin(Alertmanager::expire(self, id))
    }

    fn link(&self, id: &str) -> String {
        Alertmanager::link(self, id)
    }

    fn firing(&self) -> crate::integrations::Answer<'_, Option<std::collections::HashSet<String>>> {
        Box::pin(Alertmanager::firing(self))
    }
}
