//! Error-budget policies (`policies:` documents beside the SLO files) and
//! the gate they make: a condition over a service's SLOs' budgets
//! (`budget_remaining`, `burn_rate(WINDOW)`, `time_to_exhaustion`), and what
//! follows when it holds: `freeze` (the gate answers "no" to deploys, chaos
//! and risky automation that ask it) and a `recommend:` text shown with the
//! verdict (the guide's engine answers both "halt releases?" and "what
//! should we do?").
//!
//! A verdict is a pure function of the SLO statuses every replica already
//! shares (the leader reads Prometheus and stores them), so every replica
//! answers a gate alike without a state of its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::status::Status;
use super::{Period, Slo};
use crate::verify::Condition;

/// What a policy measures on each SLO it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// The share of the period's budget left (negative once overspent).
    BudgetRemaining,
    /// How many times faster than the even pace the budget is spent.
    BurnRate(BurnWindow),
    /// At the last hour's burn rate, until the budget is spent (seconds;
    /// not burning: never).
    TimeToExhaustion,
}

/// The window a `burn_rate(…)` is read over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BurnWindow {
    /// The period so far: the budget spent over the share of the period
    /// gone (a rolling period: all of it). Above 1, the budget runs out
    /// before the period ends.
    Period,
    /// One of the SLO's alert windows (`5m`, `1h`, `6h`, … as `slo rules`
    /// writes them for its period).
    Window(String),
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metric::BudgetRemaining => f.write_str("budget_remaining"),
            Metric::BurnRate(BurnWindow::Period) => f.write_str("burn_rate(period)"),
            Metric::BurnRate(BurnWindow::Window(w)) => write!(f, "burn_rate({w})"),
            Metric::TimeToExhaustion => f.write_str("time_to_exhaustion"),
        }
    }
}

/// `METRIC OP NUMBER`: `budget_remaining < 0.25`, `burn_rate(1h) > 2`,
/// `time_to_exhaustion < 3d` (a duration).
#[derive(Debug, Clone, PartialEq)]
pub struct When {
    pub metric: Metric,
    pub condition: Condition,
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.metric {
            Metric::TimeToExhaustion => write!(
                f,
                "{} {}",
                self.metric,
                self.condition.to_string().replacen(
                    &format!("{}", self.condition.value),
                    &human(self.condition.value),
                    1
                )
            ),
            _ => write!(f, "{} {}", self.metric, self.condition),
        }
    }
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(['<', '>', '=', '!']).ok_or_else(|| {
            format!("`{s}`: write METRIC OP NUMBER, e.g. `budget_remaining < 0.25`")
        })?;
        let (name, rest) = (s[..split].trim(), &s[split..]);
        let metric = match name {
            "budget_remaining" => Metric::BudgetRemaining,
            "time_to_exhaustion" => Metric::TimeToExhaustion,
            "incident_budget_consumed" => {
                return Err("`incident_budget_consumed` is not measured yet (an incident's cost comes with #26 item 6): use budget_remaining, burn_rate(WINDOW) or time_to_exhaustion".into())
            }
            _ => match name
                .strip_prefix("burn_rate(")
                .and_then(|w| w.strip_suffix(')'))
                .map(str::trim)
            {
                Some("period") => Metric::BurnRate(BurnWindow::Period),
                Some(w) if crate::duration::parse(w).is_ok() => {
                    Metric::BurnRate(BurnWindow::Window(w.to_owned()))
                }
                Some(w) => {
                    return Err(format!(
                        "`burn_rate({w})`: the window is `period` or a duration such as `1h`"
                    ))
                }
                None => {
                    return Err(format!(
                        "unknown measure `{name}`: expected budget_remaining, burn_rate(WINDOW) or time_to_exhaustion"
                    ))
                }
            },
        };
        let condition = if metric == Metric::TimeToExhaustion {
            // `< 3d`: the number is a duration.
            let op_len = rest
                .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
                .unwrap_or(rest.len());
            let (op, value) = (&rest[..op_len], rest[op_len..].trim());
            let d = crate::duration::parse(value).map_err(|e| {
                format!("`{s}`: time_to_exhaustion is compared with a duration such as `3d`: {e}")
            })?;
            format!("{op} {}", d.as_secs_f64()).parse::<Condition>()?
        } else {
            rest.parse::<Condition>()?
        };
        Ok(When { metric, condition })
    }
}

/// What a policy does while its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The service's gate answers "no" (deploys, chaos, risky runbooks).
    Freeze,
}

/// When a covered SLO's budget cannot be read (Prometheus down, no events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnknown {
    /// Act as if the condition held: a gate fails closed.
    #[default]
    Hold,
    /// Leave that SLO out.
    Ignore,
}

/// Which SLOs a policy covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `service/name` ids.
    Slos(Vec<(String, String)>),
    /// Every SLO of these services.
    Services(Vec<String>),
}

/// One policy, as loaded.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub scope: Scope,
    pub when: When,
    pub actions: Vec<Action>,
    pub recommend: Option<String>,
    pub on_unknown: OnUnknown,
    pub file: std::path::PathBuf,
    pub pos: crate::runbook::Pos,
}

impl Policy {
    /// Whether it covers `slo`.
    #[must_use]
    pub fn covers(&self, slo: &Slo) -> bool {
        match &self.scope {
            Scope::Slos(ids) => ids.iter().any(|(s, n)| *s == slo.service && *n == slo.name),
            Scope::Services(services) => services.contains(&slo.service),
        }
    }
}

/// One SLO measured for one policy.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub slo: String,
    pub metric: String,
    /// `None`: unknown (why in `unknown`).
    pub value: Option<f64>,
    pub holds: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// A policy's verdict on a service.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVerdict {
    pub policy: String,
    pub when: String,
    pub actions: Vec<Action>,
    /// The condition holds for one of its SLOs (or one is unknown, under
    /// `on_unknown: hold`).
    pub triggered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommend: Option<String>,
    pub measurements: Vec<Measurement>,
}

/// What the gate of a service answers.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub service: String,
    pub allowed: bool,
    /// Why not: one line per triggered freeze.
    pub reasons: Vec<String>,
    /// The `recommend:` texts of the triggered policies.
    pub recommendations: Vec<String>,
    pub policies: Vec<PolicyVerdict>,
    pub checked_at: DateTime<Utc>,
}

/// The value of `metric` for an SLO now, or why it is unknown.
fn measure(metric: &Metric, slo: &Slo, st: &Status, now: DateTime<Utc>) -> Result<f64, String> {
    let unknown = || {
        st.error
            .clone()
            .unwrap_or_else(|| "no events in the period".into())
    };
    match metric {
        Metric::BudgetRemaining => st.remaining.ok_or_else(unknown),
        Metric::TimeToExhaustion => {
            if st.remaining.is_none() {
                return Err(unknown());
            }
            Ok(st.exhaustion_seconds.unwrap_or(f64::INFINITY))
        }
        Metric::BurnRate(BurnWindow::Period) => {
            let remaining = st.remaining.ok_or_else(unknown)?;
            let length = slo.period.length().as_secs_f64();
            let gone = match slo.period {
                Period::Rolling(_) => 1.0,
                Period::Calendar(_) => {
                    let gone = (now - st.period_start).to_std().unwrap_or_default();
                    (gone.as_secs_f64() / length).clamp(1e-6, 1.0)
                }
            };
            Ok((1.0 - remaining) / gone)
        }
        Metric::BurnRate(BurnWindow::Window(w)) => {
            let want = crate::duration::parse(w).map_err(|e| e.to_string())?;
            st.tiers
                .iter()
                .flat_map(|t| [&t.short, &t.long])
                .find(|b| crate::duration::parse(&b.window).ok() == Some(want))
                .ok_or_else(|| format!("`{}/{}` has no {w} alert window", slo.service, slo.name))?
                .burn_rate
                .ok_or_else(unknown)
        }
    }
}

/// The gate of `service`: every policy covering one of its SLOs, measured
/// on `statuses`. `None` when the service has no SLO.
#[must_use]
pub fn gate(
    service: &str,
    slos: &[&Slo],
    policies: &[Policy],
    statuses: &[Status],
    now: DateTime<Utc>,
) -> Option<Gate> {
    let own: Vec<&&Slo> = slos.iter().filter(|s| s.service == service).collect();
    if own.is_empty() {
        return None;
    }
    let mut verdicts = Vec::new();
    for p in policies {
        let covered: Vec<&&&Slo> = own.iter().filter(|s| p.covers(s)).collect();
        if covered.is_empty() {
            continue;
        }
        let mut measurements = Vec::new();
        for slo in covered {
            let id = format!("{}/{}", slo.service, slo.name);
            let got = statuses
                .iter()
                .find(|st| st.service == slo.service && st.slo == slo.name)
                .ok_or_else(|| "not read from Prometheus yet".to_owned())
                .and_then(|st| measure(&p.when.metric, slo, st, now));
            measurements.push(match got {
                Ok(v) => Measurement {
                    slo: id,
                    metric: p.when.metric.to_string(),
                    value: v.is_finite().then_some(v),
                    holds: p.when.condition.holds(v),
                    unknown: None,
                },
                Err(why) => Measurement {
                    slo: id,
                    metric: p.when.metric.to_string(),
                    value: None,
                    holds: p.on_unknown == OnUnknown::Hold,
                    unknown: Some(why),
                },
            });
        }
        verdicts.push(PolicyVerdict {
            policy: p.name.clone(),
            when: p.when.to_string(),
            actions: p.actions.clone(),
            triggered: measurements.iter().any(|m| m.holds),
            recommend: p.recommend.clone(),
            measurements,
        });
    }
    let mut reasons = Vec::new();
    let mut recommendations = Vec::new();
    for v in verdicts.iter().filter(|v| v.triggered) {
        if v.actions.contains(&Action::Freeze) {
            for m in v.measurements.iter().filter(|m| m.holds) {
                reasons.push(match (&m.unknown, m.value) {
                    (Some(why), _) => format!(
                        "policy `{}`: {} of {} is unknown ({why}), and the policy holds when it cannot tell",
                        v.policy, m.metric, m.slo
                    ),
                    (None, Some(x)) => format!(
                        "policy `{}`: {} of {} is {} ({})",
                        v.policy,
                        m.metric,
                        m.slo,
                        shown(&m.metric, x),
                        v.when
                    ),
                    (None, None) => format!(
                        "policy `{}`: {} of {} ({})",
                        v.policy, m.metric, m.slo, v.when
                    ),
                });
            }
        }
        if let Some(r) = &v.recommend {
            if !recommendations.contains(r) {
                recommendations.push(r.clone());
            }
        }
    }
    Some(Gate {
        service: service.to_owned(),
        allowed: reasons.is_empty(),
        reasons,
        recommendations,
        policies: verdicts,
        checked_at: now,
    })
}

/// A measured value as the reasons show it.
fn shown(metric: &str, x: f64) -> String {
    if metric == "time_to_exhaustion" {
        human(x)
    } else {
        format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// Seconds as `3d4h`, `2h`, `45m`, `30s`.
fn human(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    super::promql::duration(Duration::from_secs(
        Duration::from_secs_f64(secs.clamp(0.0, 1e12)).as_secs(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_say_what_is_wrong() {
        let w: When = "budget_remaining < 0.25".parse().unwrap();
        assert_eq!(w.metric, Metric::BudgetRemaining);
        assert!(w.condition.holds(0.2) && !w.condition.holds(0.3));
        let w: When = "burn_rate(period) > 0.8".parse().unwrap();
        assert_eq!(w.metric, Metric::BurnRate(BurnWindow::Period));
        let w: When = "burn_rate(1h)>=14.4".parse().unwrap();
        assert_eq!(w.metric, Metric::BurnRate(BurnWindow::Window("1h".into())));
        let w: When = "time_to_exhaustion < 3d".parse().unwrap();
        assert!(w.condition.holds(2.0 * 86_400.0) && !w.condition.holds(f64::INFINITY));
        assert_eq!(w.to_string(), "time_to_exhaustion < 3d");
        for (bad, says) in [
            ("budget_left < 1", "unknown measure `budget_left`"),
            ("burn_rate(soon) > 1", "`burn_rate(soon)`"),
            ("budget_remaining", "write METRIC OP NUMBER"),
            ("budget_remaining < lots", "is not a number"),
            ("time_to_exhaustion < 0.5", "compared with a duration"),
            ("incident_budget_consumed > 0.2", "not measured yet"),
        ] {
            let err = bad.parse::<When>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
