//! Service level objectives, as teams already write them: Sloth
//! `prometheus/v1` files and OpenSLO v1 `SLO` documents, read unchanged
//! into one model ([`Slo`]), checked with `file:line:col` like runbooks
//! (DESIGN §11). [`rules`] turns them into Prometheus recording and
//! multi-window multi-burn-rate alerting rules.

pub mod forecast;
pub mod impact;
mod load;
pub mod policy;
pub mod promql;
pub mod refresh;
pub mod rules;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{load_dir, load_paths, SloError, SloErrors};

use crate::runbook::position::Pos;

/// One objective of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub service: String,
    pub name: String,
    pub description: String,
    /// In percent: 99.9.
    pub objective: f64,
    pub sli: Sli,
    pub period: Period,
    /// Alerts stay silent while the long window saw fewer events (a
    /// low-traffic service does not page on one error).
    pub min_events: Option<f64>,
    /// Labels of every rule (the file's and the SLO's).
    pub labels: BTreeMap<String, String>,
    pub alerting: Alerting,
    /// Where it was read from.
    pub source: Source,
}

/// Where an SLO was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub pos: Pos,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Sloth `version: "prometheus/v1"`.
    Sloth,
    /// OpenSLO `apiVersion: openslo/v1`, `kind: SLO`.
    OpenSlo,
}

impl Format {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Sloth => "prometheus/v1",
            Format::OpenSlo => "openslo/v1",
        }
    }
}

/// How the service level is measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Bad events and all events, each per second over a window: the
    /// period's ratio is weighted by traffic.
    Events {
        errors: promql::Query,
        total: promql::Query,
    },
    /// The error ratio itself, over a window (no event counts: the
    /// period's ratio is the mean of short windows' ratios).
    Ratio { error_ratio: promql::Query },
}

/// The window the budget is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The last `Duration`, at every moment.
    Rolling(Duration),
    /// The current calendar month or week (UTC), from its start.
    Calendar(Calendar),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Month,
    Week,
}

impl Period {
    /// Its nominal length: a calendar month counts as 30 days.
    #[must_use]
    pub fn length(self) -> Duration {
        match self {
            Period::Rolling(d) => d,
            Period::Calendar(Calendar::Month) => Duration::from_secs(30 * 86_400),
            Period::Calendar(Calendar::Week) => Duration::from_secs(7 * 86_400),
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Rolling(d) => write!(f, "rolling {}", promql::duration(*d)),
            Period::Calendar(Calendar::Month) => f.write_str("calendar month"),
            Period::Calendar(Calendar::Week) => f.write_str("calendar week"),
        }
    }
}

/// Alert names, labels and annotations from the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alerting {
    /// `None`: derived from the service and SLO.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub page: Tier,
    pub ticket: Tier,
}

/// One severity of burn-rate alert.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tier {
    pub disabled: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Slo {
    /// `service-name`, as Sloth's `sloth_id`.
    #[must_use]
    pub fn id(&self) -> String {
        format!("{}-{}", self.service, self.name)
    }

    /// The share of events allowed to fail: 0.001 for 99.9%.
    #[must_use]
    pub fn budget_ratio(&self) -> f64 {
        decimal(1.0 - self.objective / 100.0)
    }

    /// The objective as a ratio: 0.999 for 99.9%.
    #[must_use]
    pub fn objective_ratio(&self) -> f64 {
        decimal(self.objective / 100.0)
    }

    /// The period's budget in minutes of full outage: 43.2 for 99.9% of 30
    /// days.
    #[must_use]
    pub fn budget_minutes(&self) -> f64 {
        self.budget_ratio() * self.period.length().as_secs_f64() / 60.0
    }
}

/// `x` without the binary noise of decimal percentages (`1 - 0.999` is
/// 0.0010000000000000009): 12 significant decimals are plenty.
fn decimal(x: f64) -> f64 {
    (x * 1e12).round() / 1e12
}

/// Every SLO of a directory (or of some files).
#[derive(Debug, Clone, Default)]
pub struct SloSet {
    slos: Vec<Slo>,
    forecasts: Vec<crate::slo::forecast::Forecast>,
    policies: Vec<policy::Policy>,
}

impl SloSet {
    #[must_use]
    pub fn new(mut slos: Vec<Slo>) -> Self {
        slos.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        SloSet {
            slos,
            forecasts: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// With these error-budget policies (`policies:` documents).
    #[must_use]
    pub fn with_policies(mut self, policies: Vec<policy::Policy>) -> Self {
        self.policies = policies;
        self
    }

    #[must_use]
    pub fn policies(&self) -> &[policy::Policy] {
        &self.policies
    }

    /// Every notifier the policies' `notify` actions name is one of
    /// `configured` (the server config's `notifiers:`), checked at start,
    /// reload and `check --config`.
    ///
    /// # Errors
    /// Each unknown name, where the policy is.
    pub fn check_notifiers(&self, configured: &[&str]) -> Result<(), SloErrors> {
        let errors: Vec<SloError> = self
            .policies
            .iter()
            .flat_map(|p| p.notifiers().map(move |n| (p, n)))
            .filter(|(_, n)| !configured.contains(n))
            .map(|(p, n)| SloError {
                file: p.file.clone(),
                pos: Some(p.pos),
                slo: None,
                message: format!(
                    "policy `{}`: notifier `{n}` is not configured ({})",
                    p.name,
                    if configured.is_empty() {
                        "the server config has no `notifiers:`".to_owned()
                    } else {
                        format!("configured: {}", configured.join(", "))
                    }
                ),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SloErrors(errors))
        }
    }

    /// Every SLO the runbooks' `verify: {slo: …}` steps name is one of
    /// these (checked at start, reload and `check --slos`).
    ///
    /// # Errors
    /// Each unknown SLO, where the runbook names it.
    pub fn check_runbook_refs(
        &self,
        runbooks: &crate::runbook::RunbookSet,
    ) -> Result<(), crate::runbook::LoadErrors> {
        let known: Vec<String> = self
            .slos
            .iter()
            .map(|s| format!("{}/{}", s.service, s.name))
            .collect();
        let mut errors = Vec::new();
        for rb in runbooks.iter() {
            for (id, pos) in rb.slo_refs.iter().filter(|(id, _)| !known.contains(id)) {
                errors.push(crate::runbook::LoadError {
                    file: rb.source.clone(),
                    pos: Some(*pos),
                    runbook: Some(rb.name.clone()),
                    step: None,
                    message: if known.is_empty() {
                        format!("SLO `{id}` is not defined: no SLO files are loaded (`slos:` in the config, `--slos DIR`)")
                    } else {
                        format!("SLO `{id}` is not defined (defined: {})", known.join(", "))
                    },
                    warning: false,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(crate::runbook::LoadErrors(errors))
        }
    }

    /// Each service with SLOs, frozen or not by its policies on these
    /// statuses (overrides aside: they let the gate say yes, they do not
    /// unfreeze the budget), with the notifiers its `freeze` policies name.
    /// A service no `freeze` policy covers (any more: a reload) is not
    /// frozen.
    #[must_use]
    pub fn freezes(
        &self,
        statuses: &[status::Status],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<crate::store::Freeze> {
        let mut services: Vec<&str> = self.slos.iter().map(|s| s.service.as_str()).collect();
        services.dedup();
        services
            .into_iter()
            .filter_map(|service| {
                let freezing: Vec<&policy::Policy> = self
                    .policies
                    .iter()
                    .filter(|p| p.actions.contains(&policy::Action::Freeze))
                    .filter(|p| {
                        self.slos
                            .iter()
                            .any(|s| s.service == service && p.covers(s))
                    })
                    .collect();
                let gate = self.gate(service, statuses, &[], now)?;
                let mut notify: Vec<String> = Vec::new();
                for n in freezing.iter().flat_map(|p| p.notifiers()) {
                    if !notify.iter().any(|x| x == n) {
                        notify.push(n.to_owned());
                    }
                }
                Some(crate::store::Freeze {
                    service: service.to_owned(),
                    frozen: !gate.allowed,
                    reasons: gate.reasons.join("; "),
                    notify,
                })
            })
            .collect()
    }

    /// The gate of `service` on these statuses and overrides (`None`: no
    /// SLO of that service).
    #[must_use]
    pub fn gate(
        &self,
        service: &str,
        statuses: &[status::Status],
        overrides: &[crate::store::GateOverride],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<policy::Gate> {
        let slos: Vec<&Slo> = self.slos.iter().collect();
        policy::gate(service, &slos, &self.policies, statuses, overrides, now)
    }

    /// With these capacity forecasts (`forecasts:` documents of the same
    /// files).
    #[must_use]
    pub fn with_forecasts(mut self, mut forecasts: Vec<crate::slo::forecast::Forecast>) -> Self {
        forecasts.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        self.forecasts = forecasts;
        self
    }

    pub fn forecasts(&self) -> impl Iterator<Item = &crate::slo::forecast::Forecast> {
        self.forecasts.iter()
    }

    #[must_use]
    pub fn forecast(&self, service: &str, name: &str) -> Option<&crate::slo::forecast::Forecast> {
        self.forecasts
            .iter()
            .find(|f| f.service == service && f.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Slo> {
        self.slos.iter()
    }

    /// How many SLOs (forecasts not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slos.len()
    }

    /// No SLOs (there may be forecasts).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slos.is_empty()
    }

    #[must_use]
    pub fn get(&self, service: &str, name: &str) -> Option<&Slo> {
        self.slos
            .iter()
            .find(|s| s.service == service && s.name == name)
    }
}

/// The SLOs of `dir` (none without one).
///
/// # Errors
/// Every problem in its files.
pub fn load_configured(dir: Option<&std::path::Path>) -> Result<SloSet, SloErrors> {
    dir.map_or_else(|| Ok(SloSet::default()), load_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_s_budget_99_9_of_30_days_is_43_2_minutes() {
        let set = load::parse_text(
            std::path::Path::new("a.yaml"),
            "version: prometheus/v1\nservice: web\nslos:\n  - name: avail\n    objective: 99.9\n    sli:\n      raw:\n        error_ratio_query: sum(rate(e[{{.window}}])) / sum(rate(t[{{.window}}]))\n",
        )
        .unwrap();
        let slo = &set.slos[0];
        assert!((slo.budget_minutes() - 43.2).abs() < 1e-9);
        assert_eq!(slo.id(), "web-avail");
    }
}
