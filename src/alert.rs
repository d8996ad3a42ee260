//! The Alertmanager webhook payload, version 4: what `POST /webhook` receives
//! and what `runbookd run --alert FILE` reads.
//!
//! Lenient with what Alertmanager may add (unknown fields are ignored), strict
//! with what the contract needs: `version` must be `"4"`, `receiver`, `status`,
//! `groupKey` and a non-empty `alerts` list are required, and every alert needs
//! `status`, `labels` and `startsAt`. An alert's `fingerprint` is always
//! computed from its labels the way Alertmanager does (FNV-1a over the sorted
//! label set): a sent one that differs is not trusted, and hand-written
//! payloads need none.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Label or annotation set, sorted by name as Alertmanager sends them.
pub type Labels = BTreeMap<String, String>;

/// Whether an alert (or a whole notification) is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub const ALL: [Status; 2] = [Status::Firing, Status::Resolved];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "firing" => Ok(Status::Firing),
            "resolved" => Ok(Status::Resolved),
            other => Err(format!("unknown alert status `{other}`")),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 3339 instant in UTC. Alertmanager's zero time
/// `0001-01-01T00:00:00Z` (sent as `endsAt` of every firing alert) is a valid
/// value, see [`Timestamp::is_zero`]. Formats back exactly as Go's
/// `RFC3339Nano` does (trailing zeros of the fraction dropped), so the value a
/// template sees is the one Alertmanager sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Parses RFC 3339 with 0 to 9 fractional digits and any offset.
    ///
    /// # Errors
    /// When `s` is not an RFC 3339 date-time.
    pub fn parse(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("`{s}` is not an RFC 3339 time stamp: {e}"))
    }

    #[must_use]
    pub fn from_utc(t: DateTime<Utc>) -> Self {
        Timestamp(t)
    }

    #[must_use]
    pub fn as_utc(&self) -> DateTime<Utc> {
        self.0
    }

    /// Go's zero `time.Time`, which Alertmanager uses for "no end yet".
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.0.year() == 1 && self.0.ordinal() == 1 && self.0.num_seconds_from_midnight() == 0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S"))?;
        let nanos = self.0.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            let digits = format!("{nanos:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One alert of a notification (deserialized from runbookd's own records;
/// a webhook payload is parsed by [`Notification::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: Status,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: Timestamp,
    /// Alertmanager's zero time while the alert fires.
    pub ends_at: Timestamp,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Alert {
    /// The `alertname` label, or `""`.
    #[must_use]
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// A whole webhook notification: one Alertmanager group, as sent to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    pub status: Status,
    pub receiver: String,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// Why a payload was refused; `path` names the offending field
/// (`alerts[0].startsAt`), empty for the document itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct PayloadError {
    pub path: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNotification {
    version: String,
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    status: Status,
    receiver: String,
    #[serde(default)]
    group_labels: Labels,
    #[serde(default)]
    common_labels: Labels,
    #[serde(default)]
    common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: Status,
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    starts_at: Timestamp,
    #[serde(default)]
    ends_at: Option<Timestamp>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Notification {
    /// Parses and checks a webhook body.
    ///
    /// # Errors
    /// A [`PayloadError`] naming the field that is missing, mistyped or unsupported.
    pub fn from_json(body: &[u8]) -> Result<Self, PayloadError> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            None => {
                return Err(PayloadError {
                    path: String::new(),
                    message: "the body is empty".to_owned(),
                })
            }
            Some(_) => {
                return Err(PayloadError {
                    path: String::new(),
                    message: "the payload must be a JSON object".to_owned(),
                })
            }
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let raw: RawNotification = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            PayloadError {
                path: if path == "." || path == "?" {
                    String::new()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })?;
        de.end().map_err(|e| PayloadError {
            path: String::new(),
            message: format!("unexpected data after the JSON object ({e})"),
        })?;
        raw.try_into()
    }
}

impl TryFrom<RawNotification> for Notification {
    type Error = PayloadError;

    fn try_from(raw: RawNotification) -> Result<Self, PayloadError> {
        let err = |path: &str, message: String| PayloadError {
            path: path.to_owned(),
            message,
        };
        if raw.version != "4" {
            return Err(err(
                "version",
                format!(
                    "unsupported webhook version `{}`, expected `4`",
                    raw.version
                ),
            ));
        }
        if raw.alerts.is_empty() {
            return Err(err(
                "alerts",
                "the notification carries no alerts".to_owned(),
            ));
        }
        let zero = Timestamp::parse(GO_ZERO_TIME).expect("Go's zero time parses");
        let alerts = raw
            .alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                // Alertmanager's fingerprints are 16 hex digits; anything
                // else is refused rather than carried into keys and steps.
                if !(a.fingerprint.len() <= 32
                    && a.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(err(
                        &format!("alerts[{i}].fingerprint"),
                        format!(
                            "`{}` is not a fingerprint (hexadecimal digits, as Alertmanager sends)",
                            a.fingerprint.chars().take(40).collect::<String>()
                        ),
                    ));
                }
                // The fingerprint keys runs, cooldowns and silences: it is
                // always the labels' own, never what the sender claims (a
                // decoy claiming a real alert's fingerprint would use up its
                // cooldown or be absorbed into its run).
                let fingerprint = fingerprint(&a.labels);
                if !a.fingerprint.is_empty() && !a.fingerprint.eq_ignore_ascii_case(&fingerprint) {
                    tracing::warn!(
                        given = %a.fingerprint,
                        computed = %fingerprint,
                        "alerts[{i}]: the fingerprint does not match the labels; the labels' own is used"
                    );
                }
                Ok(Alert {
                    status: a.status,
                    labels: a.labels,
                    annotations: a.annotations,
                    starts_at: a.starts_at,
                    ends_at: a.ends_at.unwrap_or(zero),
                    generator_url: a.generator_url,
                    fingerprint,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Notification {
            version: raw.version,
            group_key: raw.group_key,
            truncated_alerts: raw.truncated_alerts,
            status: raw.status,
            receiver: raw.receiver,
            group_labels: raw.group_labels,
            common_labels: raw.common_labels,
            common_annotations: raw.common_annotations,
            external_url: raw.external_url,
            alerts,
        })
    }
}

/// Alertmanager's label-set fingerprint (prometheus/common `model.LabelSet.Fingerprint`):
/// FNV-1a 64 over the label names and values sorted by name, each followed by
/// the separator byte 0xff, as 16 lower-case hex digits.
#[must_use]
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

/// The receiver of drills' incidents.
pub const DRILL_RECEIVER: &str = "runbookd-drill";

/// The label naming the drill a run belongs to (when it has safeguards).
pub const DRILL_LABEL: &str = "runbookd_drill";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_go_formatting() {
        for (input, shown) in [
            (
                "2026-11-24T08:28:24.076141237Z",
                "2026-11-24T08:28:24.076141237Z",
            ),
            (
                "2026-11-24T08:11:03.9042749Z",
                "2026-11-24T08:11:03.9042749Z",
            ),
            ("2026-11-24T08:17:00.563Z", "2026-11-24T08:17:00.563Z"),
            ("2026-11-24T08:17:00Z", "2026-11-24T08:17:00Z"),
            ("2026-11-24T09:17:00.5+01:00", "2026-11-24T08:17:00.5Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ] {
            assert_eq!(
                Timestamp::parse(input).unwrap().to_string(),
                shown,
                "{input}"
            );
        }
        assert!(Timestamp::parse("0001-01-01T00:00:00Z").unwrap().is_zero());
        assert!(!Timestamp::parse("2026-01-01T00:00:00Z").unwrap().is_zero());
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn fingerprint_of_empty_set_is_fnv_offset() {
        assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
    }
}
