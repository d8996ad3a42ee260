//! `notifiers:` of the server config: named targets, checked at start.
//! Secrets (a Slack webhook URL, a PagerDuty routing key, an SMTP password, a
//! bearer token) come from files, which steps cannot read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One entry of `notifiers:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierFile {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// webhook, slack, pagerduty (default: PagerDuty's Events API v2).
    pub url: Option<String>,
    /// webhook, slack: the URL from a file (a Slack webhook URL is a secret).
    pub url_file: Option<PathBuf>,
    /// webhook: sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// pagerduty: the integration's routing key.
    pub routing_key_file: Option<PathBuf>,
    /// email: `host:port` of the SMTP server.
    pub smtp: Option<String>,
    /// email: `none`, `starttls` (default) or `tls`.
    pub tls: Option<SmtpTls>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// At most this many deliveries per time, e.g. `1/s`, `30/m`, `5/10s`.
    pub rate: Option<String>,
    /// Per attempt (default 10s).
    pub timeout: Option<String>,
    /// First retry delay, doubled per attempt up to 10m (default 1s).
    pub backoff: Option<String>,
    /// Give up (`dead`) this long after the event (default 24h).
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Webhook,
    Slack,
    Pagerduty,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on loopback).
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// At most `n` deliveries per `per` (a notifier's `rate`).
pub use crate::duration::Rate;

/// A checked notifier.
#[derive(Clone)]
pub struct Notifier {
    pub name: String,
    pub target: Target,
    pub rate: Option<Rate>,
    pub timeout: Duration,
    pub backoff: Duration,
    pub max_age: Duration,
}

/// Where and how a notifier delivers.
#[derive(Clone)]
pub enum Target {
    Webhook {
        url: reqwest::Url,
        bearer: Option<String>,
    },
    Slack {
        url: reqwest::Url,
    },
    Pagerduty {
        url: reqwest::Url,
        routing_key: String,
    },
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        credentials: Option<(String, String)>,
        from: lettre::message::Mailbox,
        to: Vec<lettre::message::Mailbox>,
    },
}

impl Target {
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "webhook",
            Target::Slack { .. } => "slack",
            Target::Pagerduty { .. } => "pagerduty",
            Target::Email { .. } => "email",
        }
    }
}

impl fmt::Debug for Notifier {
    /// Without secrets: a Slack URL or a routing key is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("name", &self.name)
            .field("type", &self.target.kind())
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The configured notifiers, by name.
pub type Notifiers = BTreeMap<String, Notifier>;

fn duration(raw: Option<&str>, default: Duration, what: &str) -> anyhow::Result<Duration> {
    match raw {
        None => Ok(default),
        Some(s) => {
            let d = crate::duration::parse(s).map_err(|e| anyhow::anyhow!("bad `{what}`: {e}"))?;
            anyhow::ensure!(!d.is_zero(), "`{what}` must be longer than zero");
            Ok(d)
        }
    }
}

fn http_url(raw: &str, what: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| anyhow::anyhow!("bad `{what}`: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host().is_some(),
        "bad `{what}`: an http(s) URL is needed"
    );
    Ok(url)
}

fn mailbox(raw: &str, what: &str) -> anyhow::Result<lettre::message::Mailbox> {
    raw.parse()
        .map_err(|e| anyhow::anyhow!("bad `{what}` address `{raw}`: {e}"))
}

impl NotifierFile {
    /// The secret files it names (hidden from steps).
    pub fn secret_files(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.url_file,
            &self.bearer_token_file,
            &self.routing_key_file,
            &self.password_file,
        ]
        .into_iter()
        .flatten()
    }

    /// Checks the settings of notifier `name` and reads its secrets.
    ///
    /// # Errors
    /// A missing or misplaced setting, an unreadable secret, a bad value.
    pub fn check(&self, name: &str) -> anyhow::Result<Notifier> {
        self.check_inner(name)
            .map_err(|e| anyhow::anyhow!("notifier `{name}`: {e}"))
    }

    fn check_inner(&self, name: &str) -> anyhow::Result<Notifier> {
        use crate::secret::read_secret;
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "bad name: use letters, digits, `.`, `-` and `_`"
        );
        let kind = self.kind;
        let allowed: &[&str] = match kind {
            Kind::Webhook => &["url", "url_file", "bearer_token_file"],
            Kind::Slack => &["url", "url_file"],
            Kind::Pagerduty => &["url", "routing_key_file"],
            Kind::Email => &["smtp", "tls", "username", "password_file", "from", "to"],
        };
        let given = [
            ("url", self.url.is_some()),
            ("url_file", self.url_file.is_some()),
            ("bearer_token_file", self.bearer_token_file.is_some()),
            ("routing_key_file", self.routing_key_file.is_some()),
            ("smtp", self.smtp.is_some()),
            ("tls", self.tls.is_some()),
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("from", self.from.is_some()),
            ("to", !self.to.is_empty()),
        ];
        for (field, set) in given {
            anyhow::ensure!(
                !set || allowed.contains(&field),
                "`{field}` is not a setting of a {} notifier (it has: {})",
                format!("{kind:?}").to_lowercase(),
                allowed.join(", ")
            );
        }
        let url = |required: bool| -> anyhow::Result<Option<reqwest::Url>> {
            match (&self.url, &self.url_file) {
                (Some(_), Some(_)) => anyhow::bail!("give `url` or `url_file`, not both"),
                (Some(u), None) => Ok(Some(http_url(u, "url")?)),
                (None, Some(f)) => Ok(Some(http_url(
                    &read_secret(f, "notifier URL")?,
                    "url_file",
                )?)),
                (None, None) if required => anyhow::bail!("`url` or `url_file` is needed"),
                (None, None) => Ok(None),
            }
        };
        let target = match kind {
            Kind::Webhook => Target::Webhook {
                url: url(true)?.unwrap_or_else(|| unreachable!("required")),
                bearer: self
                    .bearer_token_file
                    .as_deref()
                    .map(|p| read_secret(p, "notifier bearer token"))
                    .transpose()?,
            },
            Kind::Slack => Target::Slack {
                url: url(true)?.unwrap_or_else(|| unreachable!("required")),
            },
            Kind::Pagerduty => Target::Pagerduty {
                url: match url(false)? {
                    Some(u) => u,
                    None => http_url(PAGERDUTY_EVENTS_URL, "url")?,
                },
                routing_key: read_secret(
                    self.routing_key_file
                        .as_deref()
                        .ok_or_else(|| anyhow::anyhow!("`routing_key_file` is needed"))?,
                    "PagerDuty routing key",
                )?,
            },
            Kind::Email => {
                let smtp = self
                    .smtp
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("`smtp: HOST:PORT` is needed"))?;
                let (host, port) = smtp
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("bad `smtp` `{smtp}`: write HOST:PORT"))?;
                let credentials = match (&self.username, &self.password_file) {
                    (Some(u), Some(p)) => Some((u.clone(), read_secret(p, "SMTP password")?)),
                    (None, None) => None,
                    _ => anyhow::bail!("`username` and `password_file` go together"),
                };
                anyhow::ensure!(!self.to.is_empty(), "`to` needs at least one address");
                Target::Email {
                    host: host.to_owned(),
                    port,
                    tls: self.tls.unwrap_or(SmtpTls::Starttls),
                    credentials,
                    from: mailbox(
                        self.from
                            .as_deref()
                            .ok_or_else(|| anyhow::anyhow!("`from` is needed"))?,
                        "from",
                    )?,
                    to: self
                        .to
                        .iter()
                        .map(|t| mailbox(t, "to"))
                        .collect::<anyhow::Result<_>>()?,
                }
            }
        };
        Ok(Notifier {
            name: name.to_owned(),
            target,
            rate: self
                .rate
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| anyhow::anyhow!(e))?,
            timeout: duration(self.timeout.as_deref(), Duration::from_secs(10), "timeout")?,
            backoff: duration(self.backoff.as_deref(), Duration::from_secs(1), "backoff")?,
            max_age: duration(
                self.max_age.as_deref(),
                Duration::from_secs(24 * 3600),
                "max_age",
            )?,
        })
    }
}

/// Checks that every notifier a runbook names is configured: one error per
/// unknown name, at its `file:line:col`.
///
/// # Errors
/// Every unknown name.
pub fn check_refs(
    set: &crate::runbook::RunbookSet,
    notifiers: &Notifiers,
) -> Result<(), crate::runbook::LoadErrors> {
    let configured: Vec<&str> = notifiers.keys().map(String::as_str).collect();
    check_names(set, &configured)
}

/// [`check_refs`] against the names of a config's `notifiers:` (`check --config`).
///
/// # Errors
/// Every unknown name.
pub fn check_names(
    set: &crate::runbook::RunbookSet,
    configured: &[&str],
) -> Result<(), crate::runbook::LoadErrors> {
    let mut errors = Vec::new();
    for rb in set.iter() {
        for (name, pos) in &rb.notifier_refs {
            if !configured.contains(&name.as_str()) {
                errors.push(crate::runbook::LoadError {
                    file: rb.source.clone(),
                    pos: Some(*pos),
                    runbook: Some(rb.name.clone()),
                    step: None,
                    message: if configured.is_empty() {
                        format!("notifier `{name}` is not configured: the server config has no `notifiers:`")
                    } else {
                        format!(
                            "notifier `{name}` is not configured (configured: {})",
                            configured.join(", ")
                        )
                    },
                    warning: false,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::runbook::LoadErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> NotifierFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn rates_parse_at_the_edge() {
        assert_eq!(
            "1/s".parse::<Rate>(),
            Ok(Rate {
                n: 1,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "5/10s".parse::<Rate>().map(|r| r.per),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            "30/m".parse::<Rate>().map(|r| r.per),
            Ok(Duration::from_secs(60))
        );
        assert!("0/s".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().unwrap_err().contains("1/s"));
    }

    #[test]
    fn notifier_settings_are_checked_per_type() {
        let err = file("{type: slack, url: 'http://127.0.0.1:1/x', routing_key_file: /k}")
            .check("ops")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`routing_key_file` is not a setting of a slack notifier"),
            "{err}"
        );
        let err = file("{type: webhook}")
            .check("hook")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notifier `hook`: `url` or `url_file` is needed"),
            "{err}"
        );
        let err = file("{type: webhook, url: 'file:///etc/passwd'}")
            .check("hook")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http(s)"), "{err}");
        let err = file("{type: email, smtp: 'mail:25', from: a@b.c}")
            .check("mail")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`to` needs at least one address"), "{err}");
        let n = file("{type: email, smtp: '127.0.0.1:2525', tls: none, from: 'runbookd <r@example.com>', to: [oncall@example.com], rate: 2/s}")
            .check("mail")
            .unwrap();
        assert_eq!(n.rate.map(|r| r.n), Some(2));
        assert!(matches!(
            n.target,
            Target::Email {
                port: 2525,
                tls: SmtpTls::None,
                ..
            }
        ));
    }
}
