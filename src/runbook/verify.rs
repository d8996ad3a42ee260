//! What a `verify:` step compares (DESIGN §12): its `success` / `failure`
//! conditions and what an inconclusive end means. Part of the runbook
//! model; [`crate::verify`] measures.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a measurement is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

/// `< 0.5`: a comparison with a number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub op: Cmp,
    pub value: f64,
}

impl Condition {
    #[must_use]
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Cmp::Lt => x < self.value,
            Cmp::Le => x <= self.value,
            Cmp::Gt => x > self.value,
            Cmp::Ge => x >= self.value,
            Cmp::Eq => (x - self.value).abs() <= f64::EPSILON * self.value.abs().max(1.0),
            Cmp::Ne => (x - self.value).abs() > f64::EPSILON * self.value.abs().max(1.0),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        };
        write!(f, "{op} {}", self.value)
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (op, rest) = [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ]
        .iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r)))
        .ok_or_else(|| {
            format!("`{s}`: write a comparison and a number, e.g. `< 0.5`, `>= 50`, `== 0`")
        })?;
        let value: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{}` is not a number", rest.trim()))?;
        if !value.is_finite() {
            return Err(format!("`{s}`: the number must be finite"));
        }
        Ok(Condition { op, value })
    }
}

/// When the timeout comes before success or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// The step fails (the default).
    #[default]
    Fail,
    /// The step succeeds, saying it was inconclusive.
    Continue,
}

impl std::str::FromStr for Inconclusive {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(Inconclusive::Fail),
            "continue" => Ok(Inconclusive::Continue),
            _ => Err(format!(
                "unknown `on_inconclusive` `{s}`: expected fail (the default) or continue"
            )),
        }
    }
}

/// `verify: {slo: SERVICE/NAME, burn_rate: {window, below}}`: the SLO's
/// burn rate over `window` (its error ratio ÷ its budget ratio) must fall
/// below `below`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    /// `service/name`.
    pub slo: String,
    pub window_ms: u64,
    pub below: f64,
}

impl std::fmt::Display for BurnRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the burn rate of {} over {} < {}",
            self.slo,
            humantime::format_duration(Duration::from_millis(self.window_ms)),
            self.below
        )
    }
}
