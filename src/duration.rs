//! Durations as Prometheus and Alertmanager write them: integers with the
//! units `w`, `d`, `h`, `m`, `s`, `ms`, largest first, each at most once
//! (`1h30m`, `500ms`, `7d`, `0`), up to ten years. Nothing else: `5M` (months?), `1y`,
//! `2 hours` and a bare `30` are errors that say what to write.

use std::time::Duration;

/// Why a duration does not parse; the message names the accepted grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid duration `{input}`: {why}; write an integer and a unit (ms, s, m, h, d, w), largest first, e.g. 30s, 5m, 1h30m, 7d")]
pub struct DurationError {
    input: String,
    why: String,
}

const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `1h30m`-style durations.
///
/// # Errors
/// Anything outside the grammar, with the reason.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let fail = |why: String| DurationError {
        input: input.to_owned(),
        why,
    };
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    if input.is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut rest = input;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen: the next must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(fail(format!("expected a number at `{rest}`")));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| fail("the number is too large".into()))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(fail(if rest.is_empty() {
                format!("`{n}` has no unit (seconds would be `{n}s`)")
            } else {
                format!("unexpected `{}`", rest.chars().next().unwrap_or(' '))
            }));
        }
        let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
            let hint = match unit {
                "M" => " (`M` would be months; minutes are `m`)",
                "y" | "Y" => " (years are not a duration here; use weeks, `52w`)",
                "H" | "D" | "W" | "S" => " (units are lower case)",
                _ => "",
            };
            return Err(fail(format!("unknown unit `{unit}`{hint}")));
        };
        if last.is_some_and(|l| i <= l) {
            return Err(fail(format!(
                "`{unit}` comes after a unit that is not larger"
            )));
        }
        last = Some(i);
        total = n
            .checked_mul(UNITS[i].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| fail("it is too long".into()))?;
        rest = &rest[unit_len..];
    }
    if total > MAX_MS {
        return Err(fail("it is longer than 520w (ten years)".into()));
    }
    Ok(Duration::from_millis(total))
}

/// The longest duration accepted: ten years, in milliseconds (beyond it,
/// date arithmetic would overflow, and no timeout or window needs it).
const MAX_MS: u64 = 520 * 7 * 86_400_000;

/// At most `n` per `per`: `1/s`, `30/m`, `10/5m` (a notifier's delivery
/// rate, a runbook's or the server's run rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad rate `{s}`: write N/UNIT or N/DURATION, e.g. 1/s, 30/m, 10/5m");
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let per = if per.chars().all(|c| c.is_ascii_alphabetic()) {
            parse(&format!("1{per}")).map_err(|_| bad())?
        } else {
            parse(per).map_err(|_| bad())?
        };
        if n == 0 || per.is_zero() {
            return Err(format!("bad rate `{s}`: it must allow at least one"));
        }
        Ok(Rate { n, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.n, humantime::format_duration(self.per))
    }
}

/// Serializes a duration as whole milliseconds (`#[serde(serialize_with)]`).
///
/// # Errors
/// The serializer's.
pub fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations_parse() {
        for (s, ms) in [
            ("0", 0),
            ("0s", 0),
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
            ("2w", 1_209_600_000),
            ("1h0m10s100ms", 3_610_100),
        ] {
            assert_eq!(parse(s), Ok(Duration::from_millis(ms)), "{s}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        for (s, why) in [
            ("5M", "months"),
            ("1y", "years"),
            ("2 hours", "unexpected ` `"),
            ("30", "no unit (seconds would be `30s`)"),
            ("30sec", "unknown unit `sec`"),
            ("1.5h", "unexpected `.`"),
            ("5m1h", "not larger"),
            ("1s1s", "not larger"),
            ("", "empty"),
            ("-5s", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("9999999999999w", "too long"),
            ("14000000w", "ten years"),
            ("521w", "ten years"),
        ] {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.contains("e.g. 30s, 5m, 1h30m"), "{e}");
        }
    }
}
