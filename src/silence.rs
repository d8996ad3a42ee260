//! `silence:` steps: an Alertmanager silence (API v2) for the alert while
//! remediation runs. runbookd creates it itself (no subprocess), tags its
//! comment with the incident, run and step so that a retried step finds the
//! silence it already made instead of making a second one, and expires it
//! when the run ends (or, with `until: resolved`, when the alert resolves).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::matcher::{MatchOp, Matcher};

/// Until when a silence step's silence lasts (besides its `duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Expired when the run ends, however it ends.
    RunEnd,
    /// Expired when the alert resolves.
    Resolved,
}

/// A matcher as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl From<&Matcher> for ApiMatcher {
    fn from(m: &Matcher) -> Self {
        let (is_regex, is_equal) = match m.op {
            MatchOp::Equal => (false, true),
            MatchOp::NotEqual => (false, false),
            MatchOp::Regex => (true, true),
            MatchOp::NotRegex => (true, false),
        };
        ApiMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex,
            is_equal,
        }
    }
}

impl TryFrom<&ApiMatcher> for Matcher {
    type Error = String;

    fn try_from(m: &ApiMatcher) -> Result<Self, String> {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&m.name, op, &m.value).map_err(|e| format!("silence matcher `{m}`: {e}"))
    }
}

impl std::fmt::Display for ApiMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// The Alertmanager runbookd silences through (`alertmanager:` in the config).
#[derive(Clone)]
pub struct Alertmanager {
    pub url: reqwest::Url,
    bearer: Option<String>,
    client: reqwest::Client,
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
    status: ListedStatus,
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
    ) -> Result<String, String> {
        let (matchers, duration) = (
            &silence.matchers,
            Duration::from_millis(silence.duration_ms),
        );
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
            s.created_by == "runbookd" && s.comment.contains(tag) && s.status.state != "expired"
        }) {
            return Ok(s.id.clone());
        }
        if !silence.covers_others {
            self.covers_only(matchers, &silence.alert).await?;
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
            .map(str::to_owned)
            .ok_or_else(|| "Alertmanager answered without a silenceID".to_owned())
    }

    /// Refuses matchers that hold for an alert Alertmanager has (active,
    /// silenced or inhibited) other than the one of fingerprint `own`.
    async fn covers_only(&self, matchers: &[ApiMatcher], own: &str) -> Result<(), String> {
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
        let others: Vec<&Held> = held
            .iter()
            .filter(|a| a.fingerprint != own && compiled.iter().all(|m| m.matches(&a.labels)))
            .collect();
        match others.first() {
            None => Ok(()),
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

    /// Expires the `until: run_end` silences of run `run` if it has ended
    /// without reaching its end in the executor (cancelled while it waited
    /// for approval, or before it resumed); nothing while it may still run;
    /// best effort, logged.
    pub async fn expire_run_end(&self, store: &crate::store::Store, run: i64) {
        let Ok(Some((incident, _, _))) = store.run_origin(run).await else {
            return;
        };
        let Ok(d) = store.incident(incident).await else {
            return;
        };
        let Some(crate::incident::RunDetail::Executed(r)) = d
            .runs
            .iter()
            .find(|r| r.id == run && !r.state.is_active())
            .and_then(|r| r.result.as_ref())
        else {
            return;
        };
        for step in &r.steps {
            let (Some(id), Some(plan)) = (&step.silence_id, &step.plan.silence) else {
                continue;
            };
            if plan.until == Until::RunEnd {
                match self.expire(id).await {
                    Ok(()) => {
                        tracing::info!(run, silence = %id, "the run was cancelled while it waited: its silence is expired");
                    }
                    Err(e) => {
                        tracing::warn!(run, silence = %id, error = %e, "cannot expire a cancelled run's silence; it ends at its duration");
                    }
                }
            }
        }
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
