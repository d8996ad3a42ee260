//! An instant runbookd recorded: an incident opened, a run ended, a
//! message is due. UTC, written in RFC 3339 with microseconds and `Z`
//! (`2026-12-05T21:50:23.123456Z`), the text both stores have always given
//! the API, the UI and the CLI. The stores parse it where they read it (a
//! stored value that is not one is an error naming it), so the readers
//! compare and subtract instants, never text.
//!
//! Alertmanager's own times (an alert's `startsAt` and `endsAt`) are not
//! these: they are kept as Alertmanager wrote them, and a run's identity
//! includes that text.

use chrono::{DateTime, SecondsFormat, Utc};

/// An instant runbookd recorded (see the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    #[must_use]
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// The instant.
    #[must_use]
    pub fn instant(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = String;

    /// Any RFC 3339 time, in UTC after.
    fn from_str(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn it_reads_back_as_the_text_the_stores_always_gave() {
        for text in ["2026-12-05T21:50:23.123456Z", "2026-01-01T00:00:00.000000Z"] {
            let t: Timestamp = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<Timestamp>(&format!("\"{text}\"")).unwrap(),
                t
            );
        }
        // Another offset is the same instant, written in UTC.
        let t: Timestamp = "2026-12-05T22:50:23.5+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-12-05T21:50:23.500000Z");
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err.contains("`yesterday`"), "{err}");
    }
}
