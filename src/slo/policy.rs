//! Error-budget policies (`policies:` documents beside the SLO files) and
//! what they decide. A policy is a condition and what follows when it holds:
//! - over a service's SLOs' budgets (`budget_remaining`,
//!   `burn_rate(WINDOW)`, `time_to_exhaustion`): `freeze` (the gate answers
//!   "no" to deploys, chaos and risky automation that ask it);
//! - over what one incident cost (`incident_budget_consumed`):
//!   `require_postmortem` (the incident is marked, its draft gets a P0
//!   action item) and `notify` (a `postmortem_required` notification);
//! - either way a `recommend:` text shown with the verdict (the guide's
//!   engine answers both "halt releases?" and "what should we do?").
//!
//! A verdict is a pure function of what every replica already shares (the
//! SLO statuses the leader reads and stores, an incident's recorded cost),
//! so every replica answers a gate alike without a state of its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::status::Status;
use super::{Period, Slo};
use crate::runbook::verify::Condition;

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
    /// The share of the period's budget one incident spent, from its
    /// opening to its end (measured once it resolved, per SLO).
    IncidentBudgetConsumed,
}

impl Metric {
    /// Measured on one incident, not on a service's status.
    #[must_use]
    pub fn per_incident(&self) -> bool {
        *self == Metric::IncidentBudgetConsumed
    }
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
            Metric::IncidentBudgetConsumed => f.write_str("incident_budget_consumed"),
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
            "incident_budget_consumed" => Metric::IncidentBudgetConsumed,
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
                        "unknown measure `{name}`: expected budget_remaining, burn_rate(WINDOW), time_to_exhaustion or incident_budget_consumed"
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The service's gate answers "no" (deploys, chaos, risky runbooks).
    Freeze,
    /// The incident must have a postmortem: marked on it (UI, API), its
    /// draft gets a P0 action item, and `postmortem_required` is told.
    RequirePostmortem,
    /// These notifiers (`notifiers:` in the server config) are told.
    Notify(Vec<String>),
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
        self.covers_id(&slo.service, &slo.name)
    }

    /// Whether it covers the SLO `name` of `service`.
    #[must_use]
    pub fn covers_id(&self, service: &str, name: &str) -> bool {
        match &self.scope {
            Scope::Slos(ids) => ids.iter().any(|(s, n)| s == service && n == name),
            Scope::Services(services) => services.iter().any(|s| s == service),
        }
    }

    /// The notifiers its `notify` actions name.
    pub fn notifiers(&self) -> impl Iterator<Item = &str> {
        self.actions
            .iter()
            .flat_map(|a| match a {
                Action::Notify(names) => names.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
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
    /// No policy freezes it, or an operator's override is in force.
    pub allowed: bool,
    /// What freezes it: one line per triggered freeze (also while
    /// overridden, so that the override's reader sees what it overrides).
    pub reasons: Vec<String>,
    /// The operator's override in force, if any: who, why, until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden: Option<crate::store::GateOverride>,
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
        Metric::IncidentBudgetConsumed => {
            Err("measured on an incident, not on a service's status".into())
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
/// on `statuses`; an override of `overrides` in force at `now` lets it say
/// yes all the same. `None` when the service has no SLO.
#[must_use]
pub fn gate(
    service: &str,
    slos: &[&Slo],
    policies: &[Policy],
    statuses: &[Status],
    overrides: &[crate::store::GateOverride],
    now: DateTime<Utc>,
) -> Option<Gate> {
    let own: Vec<&&Slo> = slos.iter().filter(|s| s.service == service).collect();
    if own.is_empty() {
        return None;
    }
    let mut verdicts = Vec::new();
    // Policies over one incident's cost never freeze a service.
    for p in policies.iter().filter(|p| !p.when.metric.per_incident()) {
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
    // The latest override in force (a new one replaces the previous).
    let overridden = overrides
        .iter()
        .rev()
        .find(|o| o.service == service && o.since <= now && now < o.until)
        .cloned();
    Some(Gate {
        service: service.to_owned(),
        allowed: reasons.is_empty() || overridden.is_some(),
        reasons,
        overridden,
        recommendations,
        policies: verdicts,
        checked_at: now,
    })
}

/// What the policies over an incident's cost decided for one incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OnIncident {
    /// One line per policy whose condition held (with the SLOs and shares).
    pub reasons: Vec<String>,
    /// One of them says `require_postmortem`.
    pub postmortem: bool,
    /// Whom their `notify` actions name (each once).
    pub notify: Vec<String>,
    /// Their `recommend:` texts (each once).
    pub recommendations: Vec<String>,
    /// The services of the SLOs for which a policy held (each once).
    pub services: Vec<String>,
}

impl OnIncident {
    /// No policy held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Measures each policy over an incident's cost on what the incident
/// spent, `(service, slo, share)` per SLO (`None`: not measured; an
/// unknown share holds only under `on_unknown: hold`).
#[must_use]
pub fn on_incident(policies: &[Policy], spent: &[(&str, &str, Option<f64>)]) -> OnIncident {
    let mut out = OnIncident::default();
    for p in policies.iter().filter(|p| p.when.metric.per_incident()) {
        let held: Vec<(&str, String)> = spent
            .iter()
            .filter(|(service, slo, _)| p.covers_id(service, slo))
            .filter_map(|(service, slo, share)| match share {
                Some(x) if p.when.condition.holds(*x) => Some((
                    *service,
                    format!("{service}/{slo}: {} of its budget", percent(*x)),
                )),
                None if p.on_unknown == OnUnknown::Hold => Some((
                    *service,
                    format!("{service}/{slo}: unknown, and the policy holds when it cannot tell"),
                )),
                _ => None,
            })
            .collect();
        for (service, _) in &held {
            if !out.services.iter().any(|s| s == service) {
                out.services.push((*service).to_owned());
            }
        }
        let held: Vec<String> = held.into_iter().map(|(_, said)| said).collect();
        if held.is_empty() {
            continue;
        }
        out.reasons.push(format!(
            "policy `{}` ({}): {}",
            p.name,
            p.when,
            held.join(", ")
        ));
        out.postmortem |= p.actions.contains(&Action::RequirePostmortem);
        for n in p.notifiers() {
            if !out.notify.iter().any(|x| x == n) {
                out.notify.push(n.to_owned());
            }
        }
        if let Some(r) = &p.recommend {
            if !out.recommendations.contains(r) {
                out.recommendations.push(r.clone());
            }
        }
    }
    out
}

/// A share as a percentage: one decimal, or three under 1%.
fn percent(x: f64) -> String {
    if (x * 100.0).abs() < 1.0 {
        format!("{:.3}%", x * 100.0)
    } else {
        format!("{:.1}%", x * 100.0)
    }
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
        ] {
            let err = bad.parse::<When>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn policy(name: &str, scope: Scope, when: &str, actions: Vec<Action>) -> Policy {
        Policy {
            name: name.into(),
            scope,
            when: when.parse().unwrap(),
            actions,
            recommend: Some(format!("{name} says so.")),
            on_unknown: OnUnknown::Hold,
            file: "p.yaml".into(),
            pos: crate::runbook::Pos::default(),
        }
    }

    #[test]
    fn an_incident_s_cost_requires_a_postmortem_only_past_its_policies_share() {
        let policies = [
            policy(
                "twenty",
                Scope::Services(vec!["web".into()]),
                "incident_budget_consumed > 0.2",
                vec![
                    Action::RequirePostmortem,
                    Action::Notify(vec!["ops".into()]),
                ],
            ),
            policy(
                "latency-ten",
                Scope::Slos(vec![("web".into(), "latency".into())]),
                "incident_budget_consumed > 0.1",
                vec![
                    Action::RequirePostmortem,
                    Action::Notify(vec!["ops".into(), "pd".into()]),
                ],
            ),
            // Not over an incident's cost: never asked here.
            policy(
                "freeze",
                Scope::Services(vec!["web".into()]),
                "budget_remaining < 2",
                vec![Action::Freeze],
            ),
        ];
        let none = on_incident(
            &policies,
            &[
                ("web", "availability", Some(0.15)),
                ("web", "latency", Some(0.05)),
            ],
        );
        assert!(none.is_empty() && !none.postmortem, "{none:?}");
        let some = on_incident(
            &policies,
            &[
                ("web", "availability", Some(0.15)),
                ("web", "latency", Some(0.25)),
            ],
        );
        assert!(some.postmortem);
        assert_eq!(
            some.reasons,
            [
                "policy `twenty` (incident_budget_consumed > 0.2): web/latency: 25.0% of its budget",
                "policy `latency-ten` (incident_budget_consumed > 0.1): web/latency: 25.0% of its budget",
            ]
        );
        assert_eq!(some.notify, ["ops", "pd"]);
        assert_eq!(some.services, ["web"]);
        assert_eq!(
            some.recommendations,
            ["twenty says so.", "latency-ten says so."]
        );
        // Another service's incident; an unknown share holds by default.
        assert!(on_incident(&policies, &[("db", "availability", Some(0.9))]).is_empty());
        let unknown = on_incident(&policies, &[("web", "availability", None)]);
        assert!(
            unknown.postmortem && unknown.reasons[0].contains("unknown"),
            "{unknown:?}"
        );
    }
}
